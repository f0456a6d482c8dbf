"""Fixtures for the CLI tests: a real ``kernel-server`` process, real agents on loopback
addresses, and `Kernel`, which runs the real ``kernel`` command against them.

Trimmed copies of tests/server/conftest.py's AgentProc and ServerProc (to be merged with
them). Agents run commands on this machine, so the init scripts and services the server
gets here only echo and name units that do not exist.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
AGENT = REPO / "src" / "kernel" / "agent.py"
BIN = Path(sys.executable).parent
KERNEL = BIN / "kernel"
KERNEL_SERVER = BIN / "kernel-server"
PASSWORD = "tester-password"
FAIL_FLAG = "fail-init"  # in the data dir: while it exists, init script 30-flag.sh fails
UNIT = "kernel-cli-test-no-such-unit"


def free_port(ip: str) -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return int(s.getsockname()[1])


class AgentProc:
    def __init__(self, ip: str, state_dir: Path, key: str | None = None) -> None:
        self.ip = ip
        self.port = free_port(ip)
        self.key = key or secrets.token_hex(32)
        self.state_dir = state_dir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.ip}:{self.port}"

    def start(self) -> AgentProc:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        key_file = self.state_dir.parent / f"{self.ip}-{self.port}.key"
        key_file.write_text(self.key + "\n")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(AGENT),
                *("--listen", f"{self.ip}:{self.port}"),
                *("--key-file", str(key_file)),
                *("--state-dir", str(self.state_dir)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=0.5).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"agent on {self.url} did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class ServerProc:
    """``kernel-server`` on a loopback port with an admin ``tester`` and a viewer ``viewer``."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port("127.0.0.1")
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "KERNEL_DATA_DIR": str(data_dir),
            "KERNEL_DATABASE_URL": f"sqlite:///{data_dir / 'kernel.db'}",
            "KERNEL_LISTEN": f"127.0.0.1:{self.port}",
            "KERNEL_URL": self.url,
            "KERNEL_AGENT_NETWORKS": "127.0.0.0/8",
            "KERNEL_RUN_START_TIMEOUT": "3",
            "KERNEL_AGENT_CONNECT_TIMEOUT": "2",
            "KERNEL_SSE_KEEPALIVE": "0.5",
            "KERNEL_INSTALL_EXAMPLES": "false",  # the examples would change this machine
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.token = ""

    def admin_cli(self, *args: str, stdin: str = "") -> None:
        subprocess.run(
            [str(KERNEL_SERVER), *args],
            env=self.env,
            input=stdin.encode(),
            capture_output=True,
            timeout=60,
            check=True,
        )

    def start(self) -> ServerProc:
        with open(self.data_dir / "server.log", "ab") as log:
            self.proc = subprocess.Popen([str(KERNEL_SERVER)], env=self.env, stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=0.5).status_code == 200:
                    return self
            except httpx.TransportError:
                assert self.proc.poll() is None, (self.data_dir / "server.log").read_text()
                time.sleep(0.05)
        raise RuntimeError("kernel-server did not start")

    def new_token(self, user: str = "tester", password: str = PASSWORD) -> str:
        r = httpx.post(
            self.url + "/api/v1/auth/token", json={"username": user, "password": password}
        )
        assert r.status_code == 201, r.text
        return str(r.json()["token"])

    def api(self, token: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            timeout=30,
            headers={"Authorization": f"Bearer {token or self.token}"},
        )

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def write_catalogue(data: Path) -> None:
    """Init scripts and services that change nothing on this machine."""
    init = data / "init"
    init.mkdir(parents=True)
    (init / "10-hello.sh").write_text('echo "hello from $KERNEL_INIT_SCRIPT"\n')
    (init / "20-second.sh").write_text("echo second\n")
    (init / "30-flag.sh").write_text(
        f'if [ -e {data / FAIL_FLAG} ]; then echo "flag is set" >&2; exit 5; fi\necho third\n'
    )
    svc = data / "service" / "echoer"
    svc.mkdir(parents=True)
    (svc / "info.json").write_text(json.dumps({"description": "only echoes", "unit": UNIT}))
    (svc / "deploy.sh").write_text("echo deploying echoer\n")
    (svc / "remove.sh").write_text("echo removing echoer\n")
    broken = data / "service" / "broken"
    broken.mkdir()
    (broken / "info.json").write_text("{not json")


class Kernel:
    """Runs the ``kernel`` command as a user would: its own HOME and config file. Every run
    is checked for a traceback (none may ever reach a user)."""

    def __init__(self, server: ServerProc, home: Path, token: str) -> None:
        self.server = server
        self.home = home
        self.token = token
        home.mkdir(parents=True, exist_ok=True)

    def env(self, **extra: str | None) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("KERNEL_") and k not in ("NO_COLOR", "TERM")
        }
        env.update(
            HOME=str(self.home),
            XDG_CONFIG_HOME=str(self.home / ".config"),
            KERNEL_URL=self.server.url,
            KERNEL_TOKEN=self.token,
        )
        for k, v in extra.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        return env

    def run(
        self,
        *args: str | bytes,
        input: str | bytes | None = None,
        timeout: float = 60,
        **env: str | None,
    ) -> subprocess.CompletedProcess[str]:
        data = input.encode() if isinstance(input, str) else input
        raw = subprocess.run(
            [str(KERNEL), *args],
            env=self.env(**env),
            input=data,
            capture_output=True,
            timeout=timeout,
        )
        out = subprocess.CompletedProcess(
            raw.args,
            raw.returncode,
            raw.stdout.decode("utf-8", "replace"),
            raw.stderr.decode("utf-8", "replace"),
        )
        assert "Traceback" not in out.stderr, out.stderr
        assert "Traceback" not in out.stdout, out.stdout
        return out

    def ok(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        out = self.run(*args, **kw)
        assert out.returncode == 0, (out.returncode, out.stdout, out.stderr)
        return out

    def json(self, *args: str, **kw: Any) -> Any:
        return json.loads(self.ok(*args, "--json", **kw).stdout)

    def popen(self, *args: str, **env: str | None) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [str(KERNEL), *args],
            env=self.env(**env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )


class Fleet:
    """A server with agents: web1, web2 (tag web), db1 (tag db), and dead1 (tag dead) whose
    agent was stopped after it joined."""

    def __init__(self, server: ServerProc, agents: dict[str, AgentProc], kernel: Kernel):
        self.server = server
        self.agents = agents
        self.kernel = kernel

    def wait_job(self, job_id: int, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self.server.api() as c:
            while True:
                job = c.get(f"/api/v1/jobs/{job_id}?output=1").json()
                if job["state"] in ("finished", "cancelled"):
                    return job  # type: ignore[no-any-return]
                assert time.monotonic() < deadline, job
                time.sleep(0.05)

    def wait_init_idle(self, timeout: float = 60) -> None:
        """Until no init script is queued or running anywhere (joins start them)."""
        deadline = time.monotonic() + timeout
        with self.server.api() as c:
            while True:
                busy = [
                    j
                    for j in c.get("/api/v1/jobs?limit=100").json()["jobs"]
                    if j["kind"] == "init" and j["state"] in ("queued", "running")
                ]
                if not busy:
                    return
                assert time.monotonic() < deadline, busy
                time.sleep(0.1)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("cli")
    data = root / "data"
    write_catalogue(data)
    server = ServerProc(data).start()
    agents: dict[str, AgentProc] = {}
    try:
        server.admin_cli(
            "create-user", "tester", "--role", "admin", "--password-stdin", stdin=PASSWORD + "\n"
        )
        server.admin_cli(
            "create-user", "viewer", "--role", "viewer", "--password-stdin", stdin=PASSWORD + "\n"
        )
        server.token = server.new_token()
        base = 100 + (os.getpid() % 50) * 3
        for i, (name, tag) in enumerate(
            [("web1", "web"), ("web2", "web"), ("db1", "db"), ("dead1", "dead")]
        ):
            agent = AgentProc(f"127.0.{base // 250}.{base % 250 + i + 2}", root / name)
            agents[name] = agent.start()
            with server.api() as c:
                r = c.post(
                    "/api/v1/servers",
                    json={
                        "name": name,
                        "agent_url": agent.url,
                        "agent_key": agent.key,
                        "tags": [tag],
                    },
                )
                assert r.status_code == 201, r.text
        f = Fleet(server, agents, Kernel(server, root / "home", server.token))
        f.wait_init_idle()
        agents["dead1"].stop()
        yield f
    finally:
        for a in agents.values():
            a.stop()
        server.stop()


@pytest.fixture
def kernel(fleet: Fleet) -> Kernel:
    return fleet.kernel

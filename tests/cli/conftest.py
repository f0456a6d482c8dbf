"""Fixtures for the CLI tests: a real ``kernel-server`` process, real agents on loopback
addresses, and `Kernel`, which runs the real ``kernel`` command against them.

The server and agents come from the shared harness (tests/support). Agents run commands on
this machine, so the init scripts and services the server gets here only echo and name units
that do not exist.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.agents import Agent, start_agent
from support.servers import ServerProc

KERNEL = Path(sys.executable).parent / "kernel"
FAIL_FLAG = "fail-init"  # in the data dir: while it exists, init script 30-flag.sh fails
UNIT = "kernel-cli-test-no-such-unit"


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

    def __init__(self, server: ServerProc, agents: dict[str, Agent], kernel: Kernel):
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
    agents: dict[str, Agent] = {}
    try:
        server.create_user("tester", "admin")
        server.create_user("viewer", "viewer")
        server.token = server.new_token()
        base = 100 + (os.getpid() % 50) * 3
        for i, (name, tag) in enumerate(
            [("web1", "web"), ("web2", "web"), ("db1", "db"), ("dead1", "dead")]
        ):
            agent = start_agent(root / name, f"127.0.{base // 250}.{base % 250 + i + 2}")
            agents[name] = agent
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
        left = [p for a in agents.values() for p in a.teardown()]
        server.stop()
        assert not left, f"processes left behind by the agents: {left}"


@pytest.fixture
def kernel(fleet: Fleet) -> Kernel:
    return fleet.kernel

"""Real agent processes on loopback, and the checks that they leave nothing behind.

Every agent started here carries a unique marker in its environment; the commands it runs
inherit it. At teardown the agent must still answer /healthz, and no process carrying the
marker may be left (the agent, its keeper and every command are stopped by pid).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from kernel.agent import signed_headers

AGENT_PY = Path(__file__).resolve().parents[2] / "src" / "kernel" / "agent.py"
KEY = "ab" * 32


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def marked_pids(marker: str) -> list[int]:
    """Live processes whose environment holds ``marker``."""
    found = []
    needle = marker.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle in f.read():
                    found.append(int(entry))
        except OSError:
            continue
    return found


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in pids if pid_alive(p)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


@dataclass
class Agent:
    """One agent process; `restart` keeps the port, key, state dir and marker."""

    tmp: Path
    port: int
    key: str = KEY
    extra: list[str] = field(default_factory=list)
    python: str = sys.executable
    host: str = "127.0.0.1"
    marker: str = field(default_factory=lambda: uuid.uuid4().hex)
    proc: subprocess.Popen[bytes] | None = None
    keepers: list[int] = field(default_factory=list)
    starts: int = 0

    @property
    def url(self) -> str:
        scheme = "https" if any("--tls-cert" in a for a in self.extra) else "http"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def state_dir(self) -> Path:
        return self.tmp / "state"

    @property
    def log(self) -> str:
        return "".join(p.read_text() for p in sorted(self.tmp.glob("agent-*.log")))

    def start(self, wait: bool = True) -> None:
        key_file = self.tmp / "agent.key"
        key_file.write_text(self.key + "\n")
        conf = self.tmp / "agent.conf"
        if not conf.exists():
            conf.write_text("")
        self.starts += 1
        log = open(self.tmp / f"agent-{self.starts}.log", "wb")
        env = dict(os.environ, KERNEL_TEST_MARK=self.marker)
        self.proc = subprocess.Popen(
            [self.python, str(AGENT_PY), "--config", str(conf),
             "--listen", f"{self.host}:{self.port}", "--key-file", str(key_file),
             "--state-dir", str(self.state_dir), "--request-timeout", "3", *self.extra],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env,
        )  # fmt: skip
        log.close()
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited {self.proc.returncode}:\n{self.log}")
            m = re.findall(r"keeper pid (\d+)", self.log)
            if m and self.healthy():
                self.keepers.append(int(m[-1]))
                return
            time.sleep(0.05)
        raise AssertionError(f"agent did not come up:\n{self.log}")

    def healthy(self) -> bool:
        try:
            verify = False if self.url.startswith("https") else True
            return httpx.get(self.url + "/healthz", timeout=2, verify=verify).text == "ok"
        except httpx.HTTPError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the agent process only (its keeper and runs carry on, as under systemd)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def restart(self, sig: int = signal.SIGTERM) -> None:
        self.stop(sig)
        self.start()

    # requests

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        key: str | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 30,
        client: httpx.Client | None = None,
    ) -> httpx.Response:
        content = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
        h = signed_headers(key or self.key, method, path, content)
        h.update(headers or {})
        c = client or httpx
        return c.request(method, self.url + path, content=content, headers=h, timeout=timeout)  # type: ignore[operator]

    def exec(self, cmd: str, **fields: Any) -> dict[str, Any]:
        r = self.request("POST", "/api/v2/exec", {"cmd": cmd, **fields})
        assert r.status_code == 200, r.text
        data: dict[str, Any] = r.json()
        return data

    def teardown(self) -> list[int]:
        """Stop everything by pid; the pids that had to be killed (should be none)."""
        self.stop()
        for pid in self.keepers:
            if pid_alive(pid):
                os.kill(pid, signal.SIGTERM)  # the keeper cancels its runs and exits
        wait_gone(self.keepers, 8)
        leftovers = [p for p in marked_pids(self.marker) if pid_alive(p)]
        for pid in leftovers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        wait_gone(leftovers, 5)
        return leftovers


def self_signed_cert(directory: Path, name: str = "cert") -> tuple[str, str]:
    """A throwaway self-signed certificate and key for an agent's TLS (paths as strings)."""
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=kernel-agent", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return str(cert), str(key)


@pytest.fixture
def agent_factory(tmp_path: Path) -> Iterator[Callable[..., Agent]]:
    agents: list[Agent] = []

    def make(*extra: str, start: bool = True, **kw: Any) -> Agent:
        d = tmp_path / f"agent{len(agents)}"
        d.mkdir()
        a = Agent(d, kw.pop("port", None) or free_port(kw.get("host", "127.0.0.1")),
                  extra=list(extra), **kw)  # fmt: skip
        agents.append(a)
        if start:
            a.start()
        return a

    yield make
    problems = []
    for a in agents:
        if a.proc is not None and a.proc.poll() is None and not a.healthy():
            problems.append(f"agent on port {a.port} stopped answering")
        leftovers = a.teardown()
        if leftovers:
            problems.append(f"processes left behind by agent on port {a.port}: {leftovers}")
    assert not problems, problems


@pytest.fixture
def agent(agent_factory: Callable[..., Agent]) -> Agent:
    return agent_factory()

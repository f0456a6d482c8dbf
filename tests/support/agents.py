"""A real agent process (``kernel-agent``, the one file) on a loopback address.

Every agent started here carries a unique marker in its environment; the commands it runs
inherit it. `teardown` stops the agent, its keeper and every command by pid and returns what
had to be killed (tests fail on that).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from kernel.agent import signed_headers
from support.procs import marked_pids, pid_alive, wait_gone

AGENT_PY = Path(__file__).resolve().parents[2] / "src" / "kernel" / "agent.py"
KEY = "ab" * 32


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
    def ip(self) -> str:
        return self.host

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

    def start(self, wait: bool = True) -> Agent:
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
        return self

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

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def freeze(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the agent process only (its keeper and runs carry on, as under systemd)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a frozen agent cannot act on the signal
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


def start_agent(
    directory: Path, host: str = "127.0.0.1", key: str | None = None, extra: tuple[str, ...] = ()
) -> Agent:
    """An agent of its own (fresh key unless given) in ``directory``; stop it with
    `Agent.teardown`."""
    import secrets

    from support.procs import free_port

    directory.mkdir(parents=True, exist_ok=True)
    return Agent(directory, free_port(host), key=key or secrets.token_hex(32), extra=list(extra),
                 host=host).start()  # fmt: skip

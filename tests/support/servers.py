"""`kernel-server` as a real process on a loopback (or test-bed) address, and the settings an
in-process test app gets (`app_config`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from support.procs import free_port

BIN = Path(sys.executable).parent
KERNEL_SERVER = BIN / "kernel-server"
PASSWORD = "tester-password"


def app_config(tmp_path: Path, db_url: str | None, **extra: Any) -> dict[str, Any]:
    """Settings of an in-process test app: a data dir under ``tmp_path``, fast timeouts, and
    agents only on loopback."""
    return {
        "TESTING": True,
        "DATA_DIR": str(tmp_path / "data"),
        "DATABASE_URL": db_url,
        "SECRET_KEY": "test-secret",
        "AGENT_NETWORKS": "127.0.0.0/8",  # tests never contact anything but loopback
        "RUN_START_TIMEOUT": 3.0,
        "AGENT_CONNECT_TIMEOUT": 2.0,
        "SSE_KEEPALIVE": 0.5,
        **extra,
    }


class ServerProc:
    """``kernel-server`` as a subprocess: `start`, `login` (an admin ``tester``), `api`."""

    def __init__(
        self, data_dir: Path, db_url: str | None = None, host: str = "127.0.0.1", **env: str
    ) -> None:
        self.data_dir = data_dir
        self.port = free_port(host)
        self.url = f"http://{host}:{self.port}"
        self.env = {
            **os.environ,
            "KERNEL_DATA_DIR": str(data_dir),
            "KERNEL_DATABASE_URL": db_url or f"sqlite:///{data_dir / 'kernel.db'}",
            "KERNEL_LISTEN": f"{host}:{self.port}",
            "KERNEL_URL": self.url,
            "KERNEL_AGENT_NETWORKS": "127.0.0.0/8",
            "KERNEL_RUN_START_TIMEOUT": "3",
            "KERNEL_AGENT_CONNECT_TIMEOUT": "2",
            "KERNEL_SSE_KEEPALIVE": "0.5",
            "KERNEL_INSTALL_EXAMPLES": "false",  # their init scripts would change this machine
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.token = ""

    @property
    def log(self) -> str:
        path = self.data_dir / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def cli(self, *args: str, stdin: str = "") -> str:
        """Run ``kernel-server ARGS`` with this server's settings; its stdout."""
        out = subprocess.run(
            [str(KERNEL_SERVER), *args],
            env=self.env,
            input=stdin.encode(),
            capture_output=True,
            timeout=60,
            check=True,
        )
        return out.stdout.decode()

    def start(self, timeout: float = 30) -> ServerProc:
        with open(self.data_dir / "server.log", "ab") as log:
            self.proc = subprocess.Popen([str(KERNEL_SERVER)], env=self.env, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=0.5).status_code == 200:
                    return self
            except httpx.TransportError:
                assert self.proc.poll() is None, self.log
                time.sleep(0.05)
        raise RuntimeError(f"kernel-server did not start:\n{self.log}")

    def create_user(self, name: str, role: str, password: str = PASSWORD) -> None:
        self.cli("create-user", name, "--role", role, "--password-stdin", stdin=password + "\n")

    def new_token(self, user: str = "tester", password: str = PASSWORD) -> str:
        r = httpx.post(
            self.url + "/api/v1/auth/token", json={"username": user, "password": password}
        )
        assert r.status_code == 201, r.text
        return str(r.json()["token"])

    def login(self) -> str:
        """An admin ``tester`` and a token for it (kept as ``self.token``)."""
        self.create_user("tester", "admin")
        self.token = self.new_token()
        return self.token

    def api(self, token: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            timeout=30,
            headers={"Authorization": f"Bearer {token or self.token}"},
        )

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

"""The local agent of ``scripts/run``: the server starts an agent on this machine (loopback,
its own key in the data dir), keeps it running, and enrolls it as a server named after the
machine — so a fresh start ends with a working one-machine cluster."""

from __future__ import annotations

import logging
import re
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

import kernel.agent
from kernel.exceptions import KernelError
from kernel.server.core.db import Database
from kernel.server.inventory import initflow
from kernel.server.inventory.envcheck import check_agent
from kernel.server.models.servers import Server

log = logging.getLogger(__name__)


def machine_name() -> str:
    name = re.sub(r"[^A-Za-z0-9_.@-]", "-", socket.gethostname())[:64].lstrip("-_.@")
    return name or "localhost"


class LocalAgent:
    def __init__(
        self, config: Mapping[str, Any], db: Database, joined: Callable[[int], None]
    ) -> None:
        self.config = config
        self.db = db
        self.joined = joined  # told the server's id once it is enrolled
        self.dir = Path(config["DATA_DIR"]) / "local-agent"
        self.listen = str(config["LOCAL_AGENT_LISTEN"])
        host, _, port = self.listen.rpartition(":")
        self.url = f"http://{host}:{port}"
        self.name = config.get("LOCAL_AGENT_NAME") or machine_name()
        self.proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def key(self) -> str:
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / "agent.key"
        if not path.exists():
            path.touch(mode=0o600)
            path.write_text(secrets.token_hex(32) + "\n")
        return path.read_text().strip()

    def _spawn(self) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(Path(kernel.agent.__file__)),
                "--listen",
                self.listen,
                "--key-file",
                str(self.dir / "agent.key"),
                "--state-dir",
                str(self.dir / "state"),
            ],
            stdin=subprocess.DEVNULL,
        )

    def _wait_ready(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                return False
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return True
            except httpx.TransportError:
                time.sleep(0.1)
        return False

    def start(self) -> None:
        key = self.key()
        self._spawn()
        if not self._wait_ready():
            log.error("the local agent did not start on %s", self.listen)
        else:
            try:
                self.enroll(key)
            except KernelError as e:
                log.error("could not enroll the local agent: %s", e.message)
        self._thread = threading.Thread(target=self._supervise, name="local-agent", daemon=True)
        self._thread.start()

    def enroll(self, key: str) -> None:
        """Make sure a server record points at the local agent (first start: create it)."""
        database = self.db
        facts = check_agent(self.url, key, timeout=10)
        with database.session() as s:
            srv = s.scalars(
                select(Server).where(Server.name == self.name, Server.removed_at.is_(None))
            ).first()
            if srv is None:
                srv = Server(
                    name=self.name,
                    description="this machine (local agent)",
                    tags=["local"],
                    agent_url=self.url,
                    agent_key=key,
                    state="online",
                    facts=facts,
                )
                s.add(srv)
                s.flush()
                # The server's own machine is usually a workstation or the control host:
                # init scripts run there only when asked (LOCAL_AGENT_INIT, or the API).
                if self.config.get("LOCAL_AGENT_INIT"):
                    initflow.start(s, srv, self.config, created_by="local-agent")
                log.info("enrolled the local agent as server %r", self.name)
            elif (srv.agent_url, srv.agent_key) != (self.url, key):
                log.warning("server %r exists with another agent; leaving it alone", self.name)
            else:
                srv.facts = facts
            server_id = srv.id
        self.joined(server_id)

    def _supervise(self) -> None:
        pause = 1.0
        while not self._stopping.wait(1.0):
            if self.proc is not None and self.proc.poll() is not None:
                log.warning("local agent exited (%s); restarting", self.proc.returncode)
                time.sleep(pause)
                pause = min(pause * 2, 30.0)
                if not self._stopping.is_set():
                    self._spawn()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(3)
        proc: Any = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

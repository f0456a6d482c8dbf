"""A real agent process on loopback, for running service commands that are safe here.

Nothing here deploys onto this machine: tests with real deploys use full test hosts.
Every process the agent starts carries a marker in its environment; teardown stops the agent
and its keeper by pid and fails the test if any marked process is left.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kernel.agent_client import AgentClient, ExecResult
from kernel.server.core.shell import RemoteCommand

AGENT_PY = Path(__file__).resolve().parents[2] / "src" / "kernel" / "agent.py"
KEY = "5e" * 32


def run(client: AgentClient, command: RemoteCommand) -> ExecResult:
    """Send one RemoteCommand the way the job runner does."""
    return client.exec(
        command.cmd,
        stdin=command.stdin,
        env=dict(command.env),
        cwd=command.cwd,
        timeout=command.timeout,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _marked(marker: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if marker.encode() in f.read():
                        pids.append(int(entry))
            except OSError:
                continue
    return pids


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@dataclass
class LoopbackAgent:
    client: AgentClient

    def run(self, command: RemoteCommand) -> ExecResult:
        return run(self.client, command)


@pytest.fixture(scope="module")
def loopback_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackAgent]:
    tmp = tmp_path_factory.mktemp("agent")
    (tmp / "agent.key").write_text(KEY + "\n")
    (tmp / "agent.conf").write_text("")
    port = _free_port()
    marker = uuid.uuid4().hex
    log_path = tmp / "agent.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, str(AGENT_PY), "--config", str(tmp / "agent.conf"),
             "--listen", f"127.0.0.1:{port}", "--key-file", str(tmp / "agent.key"),
             "--state-dir", str(tmp / "state")],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL,
            env=dict(os.environ, KERNEL_TEST_MARK=marker),
        )  # fmt: skip
    keeper = None
    client = AgentClient(f"http://127.0.0.1:{port}", KEY, timeout=30)
    try:
        deadline = time.monotonic() + 15
        while keeper is None or not client.healthz():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"agent did not come up:\n{log_path.read_text()}")
            m = re.search(r"keeper pid (\d+)", log_path.read_text())
            keeper = int(m.group(1)) if m else None
            time.sleep(0.05)
        yield LoopbackAgent(client)
    finally:
        client.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if keeper is not None and _alive(keeper):
            os.kill(keeper, signal.SIGTERM)
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline and any(_alive(p) for p in _marked(marker)):
            time.sleep(0.05)
        left = [p for p in _marked(marker) if _alive(p)]
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        assert not left, f"processes left behind by the agent: {left}"

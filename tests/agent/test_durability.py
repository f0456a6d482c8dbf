"""A run's journal entry is on disk before its command starts; a signed exec's nonce survives
a power cut with it (docs/agent.md, "How runs outlive the agent").

A power cut cannot be staged here, so the first test watches the system calls instead
(strace): the order create → write → fdatasync(file) → fsync(directory) → spawn of bash is
what makes "an id never runs twice" hold across one.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from kernel.agent import signed_headers
from support.agents import Agent

STRACE = shutil.which("strace")


def traced_python(tmp_path: Path, log: Path) -> str:
    """A python that runs under strace, logging file syncs, opens and process starts."""
    wrapper = tmp_path / "python-traced"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"exec {STRACE} -f -qq -o {log} "
        "-e trace=openat,write,fdatasync,fsync,clone,clone3,vfork,execve "
        f'{sys.executable} "$@"\n'
    )
    wrapper.chmod(0o755)
    return str(wrapper)


@pytest.mark.skipif(STRACE is None, reason="no strace on this machine")
@pytest.mark.parametrize("fsync", [True, False])
def test_journal_is_durable_before_the_command_starts(
    agent_factory: Callable[..., Agent], tmp_path: Path, fsync: bool
) -> None:
    log = tmp_path / "strace.log"
    extra = [] if fsync else ["--journal-fsync", "false"]
    agent = agent_factory(*extra, python=traced_python(tmp_path, log))
    assert agent.exec("true", id="durable-1")["exit_code"] == 0
    # strace follows the agent and its keeper: it ends (flushing its log) when both have
    agent_pid = agent.request("GET", "/api/v2/info").json()["pid"]
    for pid in (agent_pid, agent.keepers[-1]):
        os.kill(pid, signal.SIGTERM)
    assert agent.proc is not None
    agent.proc.wait(10)
    lines = log.read_text().splitlines()

    def first(pattern: str, after: int = 0) -> int:
        for i in range(after, len(lines)):
            if re.search(pattern, lines[i]):
                return i
        return -1

    created = first(r'openat\(.*runs/durable-1\.run", O_WRONLY\|O_CREAT\|O_EXCL.*= (\d+)')
    assert created >= 0, "\n".join(lines[-50:])
    pid, fd = re.match(r"(\d+) .*= (\d+)$", lines[created]).groups()  # type: ignore[union-attr]
    spawn = first(r'execve\("[^"]*bash", \["bash", "-c", "true"\]', created)
    assert spawn > created
    data_sync = first(rf"^{pid} +fdatasync\({fd}\) += 0", created)
    runs_dir = first(r'openat\(.*/runs", O_RDONLY\|O_CLOEXEC\|O_DIRECTORY\) = ')
    assert runs_dir >= 0
    dir_fd = re.search(r"= (\d+)$", lines[runs_dir]).group(1)  # type: ignore[union-attr]
    dir_sync = first(rf"fsync\({dir_fd}\) += 0", created)
    if fsync:
        assert created < data_sync < spawn, "the journal entry was not synced before the spawn"
        assert created < dir_sync < spawn, "its directory entry was not synced before the spawn"
    else:
        assert data_sync == -1 or data_sync > spawn
        assert dir_sync == -1 or dir_sync > spawn


def test_a_journalled_nonce_survives_losing_the_nonces_file(agent: Agent) -> None:
    """A power cut may lose the tail of `nonces` (it is not synced); the nonce of an exec is
    in the run's journal too, which is, so replaying that exec stays refused."""
    body = b'{"cmd": "echo once"}'
    h = signed_headers(agent.key, "POST", "/api/v2/exec", body)
    r = httpx.post(agent.url + "/api/v2/exec", content=body, headers=h, timeout=30)
    assert r.json()["stdout"] == "once\n"
    agent.stop()
    (agent.state_dir / "nonces").write_text("")  # what the power cut took
    agent.start()
    r = httpx.post(agent.url + "/api/v2/exec", content=body, headers=h, timeout=30)
    assert (r.status_code, r.json()["msg"]) == (401, "nonce already used")

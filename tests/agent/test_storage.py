"""A state dir that cannot be written (full, read-only): new runs get a clear 507, everything
else keeps working, and the keeper survives a disk that fills under a running command.

The state dir is a real 1 MiB tmpfs, filled up or remounted read-only; it is unmounted by
path at teardown, whatever happened.
"""

from __future__ import annotations

import errno
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from support.agents import Agent
from support.procs import pid_alive

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs. Requested before agent_factory, so it is unmounted after the agents
    are gone."""
    mnt = tmp_path / "small-disk"
    mnt.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mnt)]
    subprocess.run(mount, check=True)
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], check=True)  # busy: detach it anyway


def fill(disk: Path) -> Path:
    """Write a file until the disk is full."""
    path = disk / "filler"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError as e:
        assert e.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return path


def remount(disk: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(disk)], check=True)


def assert_refused(agent: Agent, disk: Path, slug: str) -> None:
    r = agent.request("POST", "/api/v2/exec", {"cmd": "echo no"})
    assert r.status_code == 507, r.text
    data = r.json()
    assert data["code"] == 507 and data["error"] == slug
    assert str(disk) in data["msg"] and "new runs are refused" in data["msg"]


def assert_serving(agent: Agent, finished_id: str) -> None:
    assert agent.healthy()
    assert agent.request("GET", "/api/v2/info").status_code == 200
    r = agent.request("GET", f"/api/v2/exec/{finished_id}")
    assert r.status_code == 200 and r.json()["stdout"] == "before\n"
    # an id the agent knows still attaches, full disk or not: nothing new is written
    again = agent.request("POST", "/api/v2/exec", {"cmd": "echo before", "id": finished_id})
    assert again.status_code == 200 and again.json()["id"] == finished_id


def test_full_disk(small_disk: Path, agent_factory: Callable[..., Agent]) -> None:
    agent = agent_factory("--state-dir", str(small_disk), "--legacy-allow-ips", "127.0.0.1")
    assert agent.exec("echo before", id="before")["stdout"] == "before\n"
    waiting: list[dict[str, object]] = []
    t = threading.Thread(target=lambda: waiting.append(agent.exec("sleep 60", id="long")))
    t.start()
    while agent.request("GET", "/api/v2/exec/long").status_code != 200:
        time.sleep(0.05)
    filler = fill(small_disk)
    assert_refused(agent, small_disk, "storage_full")
    assert_serving(agent, "before")
    r = agent.request("DELETE", "/api/v2/exec/long")  # cancel needs no disk
    assert r.status_code == 200 and r.json()["cancelled"] is True
    t.join(10)
    assert waiting and waiting[0]["cancelled"] is True
    # the legacy API says it the Go agent's way, with err (the original server reads it)
    r = httpx.post(agent.url + "/api/ExecCmd", data={"cmd": "echo no"}, timeout=10)
    assert r.status_code == 507
    assert r.json()["code"] == -2 and "new runs are refused" in r.json()["err"]
    assert agent.proc is not None and agent.proc.poll() is None
    filler.unlink()  # room again: runs start again
    assert agent.exec("echo after")["stdout"] == "after\n"


def test_disk_fills_during_a_run(small_disk: Path, agent_factory: Callable[..., Agent]) -> None:
    """3 MiB of output into a 1 MiB disk: the stream is cut (truncated, output_error), the
    command finishes, the keeper lives on (a failed write used to kill it, and the agent)."""
    agent = agent_factory("--state-dir", str(small_disk))
    r = agent.exec("head -c 3000000 /dev/zero | tr '\\0' x; echo done >&2; exit 3")
    assert r["exit_code"] == 3 and r["truncated"] is True
    assert "stdout not kept past" in r["output_error"]
    assert len(r["stdout"]) < 1 << 20
    assert pid_alive(agent.keepers[-1])
    for p in small_disk.glob("runs/*.stdout"):
        p.unlink()
    assert agent.exec("echo alive")["stdout"] == "alive\n"


def test_read_only_state_dir(small_disk: Path, agent_factory: Callable[..., Agent]) -> None:
    agent = agent_factory("--state-dir", str(small_disk))
    assert agent.exec("echo before", id="before")["stdout"] == "before\n"
    remount(small_disk, "ro")
    try:
        assert_refused(agent, small_disk, "state_dir_unwritable")
        assert_serving(agent, "before")
        # an agent (re)started on a read-only state dir serves too, and refuses runs
        agent.restart()
        assert_refused(agent, small_disk, "state_dir_unwritable")
        assert_serving(agent, "before")
        assert "cannot record nonces" in agent.log and "kept in memory only" in agent.log
    finally:
        remount(small_disk, "rw")
    assert agent.exec("echo after")["stdout"] == "after\n"

"""``kernel exec`` and ``kernel jobs follow`` across a server restart, and Ctrl-C on follow."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.agents import Agent, start_agent
from support.servers import ServerProc

from .conftest import Kernel, write_catalogue


@pytest.fixture
def lone(tmp_path: Path) -> Iterator[tuple[ServerProc, Agent, Kernel]]:
    data = tmp_path / "data"
    write_catalogue(data)
    (data / "init" / "10-hello.sh").unlink()  # keep the join quick: two scripts
    server = ServerProc(data).start()
    agent = start_agent(tmp_path / "h1", "127.0.0.99")
    try:
        server.login()
        with server.api() as c:
            r = c.post(
                "/api/v1/servers",
                json={"name": "h1", "agent_url": agent.url, "agent_key": agent.key},
            )
            assert r.status_code == 201, r.text
        yield server, agent, Kernel(server, tmp_path / "home", server.token)
    finally:
        agent.teardown()
        server.stop()


def _wait_running(server: ServerProc, marker: str) -> int:
    deadline = time.monotonic() + 20
    with server.api() as c:
        while time.monotonic() < deadline:
            for j in c.get("/api/v1/jobs?limit=10").json()["jobs"]:
                if marker in j["cmd"] and j["state"] == "running":
                    return int(j["id"])
            time.sleep(0.05)
    raise AssertionError("the job did not start")


def test_exec_survives_a_server_restart(lone: tuple[ServerProc, Agent, Kernel]) -> None:
    server, _agent, kernel = lone
    cmd = "echo before; sleep 3; echo after # restart"
    proc = kernel.popen("exec", "-s", "h1", "--", cmd)
    _wait_running(server, "# restart")
    time.sleep(0.3)
    assert server.proc is not None
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(10)
    server.start()  # same port, same data: the runner re-attaches to the run
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    assert out.decode() == "h1: before\nh1: after\n"  # nothing twice, nothing lost
    assert b"Traceback" not in err


def test_follow_an_ended_job_after_a_restart(lone: tuple[ServerProc, Agent, Kernel]) -> None:
    """The server's event snapshot of a job it holds no events for has no output; the
    command prints the stored output instead."""
    server, _agent, kernel = lone
    done = kernel.run("exec", "-s", "h1", "--", "echo out; echo err >&2; exit 3")
    assert done.returncode == 4
    summary = next(line for line in done.stderr.splitlines() if line.startswith("job "))
    job_id = summary.split()[1].rstrip(":")
    server.stop()
    server.start()
    out = kernel.run("jobs", "follow", job_id)
    assert out.returncode == 4
    assert out.stdout == "h1: out\n" and "h1: err\n" in out.stderr


def test_follow_ctrl_c_leaves_the_job_running(lone: tuple[ServerProc, Agent, Kernel]) -> None:
    server, _agent, kernel = lone
    started = kernel.ok("exec", "-s", "h1", "--no-wait", "--", "sleep 30 # follow")
    job_id = int(started.stdout)
    _wait_running(server, "# follow")
    proc = kernel.popen("jobs", "follow", str(job_id))
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130
    assert f"job {job_id} is left running" in err.decode()
    with server.api() as c:
        assert c.get(f"/api/v1/jobs/{job_id}").json()["state"] == "running"
        c.post(f"/api/v1/jobs/{job_id}/cancel")


def test_ctrl_c_before_the_job_exists(lone: tuple[ServerProc, Agent, Kernel]) -> None:
    """Interrupted while the server is not answering: no job, one line, status 130."""
    server, _agent, kernel = lone
    assert server.proc is not None
    server.proc.send_signal(signal.SIGSTOP)
    try:
        proc = kernel.popen("exec", "-s", "h1", "--", "true")
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=20)
    finally:
        server.proc.send_signal(signal.SIGCONT)
    assert proc.returncode == 130
    assert err == b"kernel: interrupted\n"
    assert subprocess.run(["true"]).returncode == 0

"""Runs outlive the agent: a restarted agent re-attaches to them, or reports them lost —
never runs them twice."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from support.agents import Agent
from support.procs import pid_alive, wait_gone

from .test_exec import pids_from, start_stream


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_run_survives_restart_and_is_reattached(agent: Agent, tmp_path: Path, how: int) -> None:
    counter = tmp_path / "counter"
    body = {"cmd": f"echo run >> {counter}; echo before; sleep 1.5; echo after; exit 7", "id": "r1"}
    client, resp, _ = start_stream(agent, body)
    first = next(resp.extensions["lines"])
    assert '"before' in first
    agent.restart(how)
    resp.close()
    client.close()
    r = agent.request("GET", "/api/v2/exec/r1").json()
    assert r["state"] == "running" and r["stdout"] == "before\n"
    r = agent.exec(**body)  # attaches and waits; does not run again
    assert (r["state"], r["exit_code"], r["stdout"]) == ("finished", 7, "before\nafter\n")
    assert counter.read_text() == "run\n"
    agent.restart()  # finished runs are still known
    r = agent.request("GET", "/api/v2/exec/r1").json()
    assert (r["state"], r["exit_code"], r["stdout"]) == ("finished", 7, "before\nafter\n")
    assert counter.read_text() == "run\n"


def test_reattached_run_can_be_cancelled_and_times_out(agent: Agent, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    client, resp, _ = start_stream(agent, {"cmd": f"echo $$ > {pids}; sleep 1000", "id": "k1"})
    client2, resp2, _ = start_stream(agent, {"cmd": "sleep 1000", "id": "t1", "timeout": 1.5})
    while not pids.exists():
        time.sleep(0.02)
    agent.restart(signal.SIGKILL)
    for c, r in ((client, resp), (client2, resp2)):
        r.close()
        c.close()
    r = agent.request("DELETE", "/api/v2/exec/k1").json()
    assert r["state"] == "finished" and r["cancelled"]
    assert not pid_alive(pids_from(pids)[0])
    r = agent.request("GET", "/api/v2/exec/t1?wait=10").json()
    assert r["state"] == "finished" and r["timed_out"]


def test_run_whose_fate_is_unknown_is_lost_not_rerun(agent: Agent, tmp_path: Path) -> None:
    counter = tmp_path / "counter"
    pids = tmp_path / "pids"
    body = {"cmd": f"echo run >> {counter}; echo $$ > {pids}; sleep 1000", "id": "lost1"}
    client, resp, _ = start_stream(agent, body)
    while not pids.exists():
        time.sleep(0.02)
    keeper = agent.keepers[-1]
    agent.stop(signal.SIGKILL)
    os.kill(keeper, signal.SIGKILL)  # nobody is left to learn the exit status
    assert not wait_gone([keeper], 5)
    resp.close()
    client.close()
    agent.start()
    r = agent.request("GET", "/api/v2/exec/lost1").json()
    assert r["state"] == "lost" and r["exit_code"] is None and r["reason"]
    r = agent.exec(**body)
    assert r["state"] == "lost"
    assert counter.read_text() == "run\n"
    os.killpg(pids_from(pids)[0], signal.SIGKILL)  # the orphaned command, by its group id
    assert not wait_gone(pids_from(pids), 5)
    agent.restart()
    assert agent.request("GET", "/api/v2/exec/lost1").json()["state"] == "lost"

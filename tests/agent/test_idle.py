"""An idle agent sleeps: no periodic wake-ups in the agent or its keeper (issue 14), while
pruning still happens when it is due (driven by events and deadlines, not a clock)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from support.agents import Agent


def context_switches(pid: int) -> int:
    """Voluntary and involuntary context switches of all threads of ``pid`` so far."""
    total = 0
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        for line in status.read_text().splitlines():
            if "ctxt_switches" in line:
                total += int(line.split()[1])
    return total


def wake_ups(agent: Agent, seconds: float) -> int:
    assert agent.proc is not None
    pids = [agent.proc.pid, agent.keepers[-1]]
    before = sum(context_switches(p) for p in pids)
    time.sleep(seconds)
    return sum(context_switches(p) for p in pids) - before


def test_an_idle_agent_and_keeper_do_not_wake(agent: Agent) -> None:
    assert agent.exec("echo busy")["stdout"] == "busy\n"
    time.sleep(1.5)  # the connection's thread has parked or closed it by now
    assert wake_ups(agent, 3) <= 2  # was ~9: the accept loop every 0.5 s, the keeper every 1 s


def test_a_quiet_run_wakes_nobody(agent: Agent) -> None:
    """A run that neither prints nor ends: the keeper sleeps until its deadline."""
    waiter = threading.Thread(target=lambda: agent.exec("sleep 60", id="quiet"))
    waiter.start()
    try:
        while agent.request("GET", "/api/v2/exec/quiet").status_code != 200:
            time.sleep(0.05)
        time.sleep(1.5)
        assert wake_ups(agent, 3) <= 2
    finally:
        assert agent.request("DELETE", "/api/v2/exec/quiet").json()["cancelled"] is True
        waiter.join(10)


def test_finished_runs_are_still_pruned(agent_factory: Callable[..., Agent]) -> None:
    """By count at once, by age when the oldest is due."""
    agent = agent_factory("--keep-finished-count", "2")
    for i in range(3):
        agent.exec("true", id=f"c{i}")
    deadline = time.monotonic() + 10
    while agent.request("GET", "/api/v2/exec/c0").status_code != 404:
        assert time.monotonic() < deadline, "the run beyond keep_finished_count was kept"
        time.sleep(0.1)
    assert agent.request("GET", "/api/v2/exec/c2").status_code == 200
    aged = agent_factory("--keep-finished-seconds", "1")
    aged.exec("true", id="old")
    deadline = time.monotonic() + 10
    while aged.request("GET", "/api/v2/exec/old").status_code != 404:
        assert time.monotonic() < deadline, "the run past keep_finished_seconds was kept"
        time.sleep(0.1)
    assert not list((aged.state_dir / "runs").glob("old.*"))

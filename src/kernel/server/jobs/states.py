"""Job and run states, as pure functions (no I/O; tested directly).

A run goes ``queued → running → ok | failed | timed_out | cancelled | unreachable | lost``;
``queued`` may also end directly (cancelled before it was sent, unreachable, lost). A job is
``queued`` until a run starts, ``running`` while any run is unfinished, then ``finished`` (or
``cancelled`` if someone cancelled it).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

RUN_STATES = ("queued", "running", "ok", "failed", "timed_out", "cancelled", "unreachable", "lost")
TERMINAL = frozenset(RUN_STATES[2:])
JOB_STATES = ("queued", "running", "finished", "cancelled")


def outcome(result: Mapping[str, Any]) -> str:
    """The final run state for an agent's finished exec result (or its ``exit`` event)."""
    if result.get("state") == "lost":
        return "lost"
    if result.get("cancelled"):
        return "cancelled"
    if result.get("timed_out"):
        return "timed_out"
    return "ok" if result.get("exit_code") == 0 else "failed"


def job_state(run_states: Iterable[str], cancel_requested: bool = False) -> str:
    states = list(run_states)
    if any(s not in TERMINAL for s in states):
        return "running" if any(s != "queued" for s in states) else "queued"
    return "cancelled" if cancel_requested else "finished"


def summary(run_states: Iterable[str]) -> dict[str, int]:
    """Counts per run state, every state present (zeros included) for easy display."""
    counts = Counter(run_states)
    return {s: counts.get(s, 0) for s in RUN_STATES}


def needs_rerun(state: str) -> bool:
    """Runs that "rerun the failed runs" picks again: every ended run that did not succeed."""
    return state in TERMINAL and state != "ok"

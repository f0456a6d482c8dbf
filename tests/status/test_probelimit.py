"""The poller's adaptive probe limit (pure logic), driven by modelled probe times."""

from __future__ import annotations

import math
import random

import pytest

from kernel.server.status.probelimit import ProbeLimit


def run_rounds(limit: ProbeLimit, hosts: int, rounds: int, probe_time) -> list[int]:  # type: ignore[no-untyped-def]
    """Feed `rounds` rounds over `hosts` hosts; probe_time(host, in_flight) gives a time."""
    seen = []
    for _ in range(rounds):
        for h in range(hosts):
            limit.sample(h, probe_time(h, limit.current))
        seen.append(limit.current)
    return seen


def test_shared_cpus_keep_the_limit_low() -> None:
    # The test bed: every probe needs ~6 ms of 2 shared CPUs; with c in flight each waits for
    # the others, so its time grows with c (plus a little noise).
    rng = random.Random(1)

    def probe_time(host: int, c: int) -> float:
        return (0.012 + 0.006 * max(0, c - 2)) * rng.uniform(0.9, 1.2)

    limit = ProbeLimit(ceiling=64)
    seen = run_rounds(limit, 200, 8, probe_time)
    assert seen[0] == 4  # first round: bars only
    assert all(4 <= c <= 12 for c in seen[1:]), seen
    assert not limit.slow_start  # it hit the queue and backed off


def test_distance_alone_lets_it_grow_to_the_ceiling() -> None:
    # Real hosts: 1 to 150 ms away, each with its own CPUs; nothing queues at the server.
    rng = random.Random(2)
    rtt = {h: rng.uniform(0.001, 0.150) for h in range(300)}

    def probe_time(host: int, c: int) -> float:
        return (rtt[host] + 0.010) * rng.uniform(0.9, 1.3)  # jitter: up to 30 %

    limit = ProbeLimit(ceiling=64)
    seen = run_rounds(limit, 300, 4, probe_time)
    assert seen[-1] == 64 and limit.slow_start, seen


def test_it_backs_off_when_queueing_starts_later_and_recovers() -> None:
    load = {"busy": False}

    def probe_time(host: int, c: int) -> float:
        return 0.02 * (1 + (c / 4 if load["busy"] else 0))

    limit = ProbeLimit(ceiling=64)
    run_rounds(limit, 100, 3, probe_time)
    assert limit.current == 64
    load["busy"] = True
    run_rounds(limit, 100, 4, probe_time)
    assert limit.current <= 6
    load["busy"] = False
    run_rounds(limit, 100, 3, probe_time)
    assert limit.current == 64  # grows back (by a quarter per window once it has backed off)


def test_bounds_and_garbage() -> None:
    with pytest.raises(ValueError):
        ProbeLimit(ceiling=0)
    small = ProbeLimit(ceiling=2)
    assert small.current == 2  # floor and start never exceed the ceiling
    limit = ProbeLimit(ceiling=16)
    for bad in (0.0, -1.0, math.nan, math.inf * 0):
        limit.sample("h", bad)
    assert limit.current == 4 and "h" not in limit._best
    limit.sample("h", math.inf)  # a first bar of inf: later samples still compare sanely
    for _ in range(50):
        limit.sample("h", 0.01)
    assert limit.current == 16
    limit.forget("h")
    assert "h" not in limit._best

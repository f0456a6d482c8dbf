"""Testbed: time to bring hosts up (agents answering) and memory per host.

Run as root: ``.venv/bin/python bench/bench_testbed.py [--quick]``. Updates the ``testbed``
section of docs/benchmarks.md. Targets: a full host ready in < 3 s when started in parallel,
100 light hosts in < 20 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

from _report import table, write_section
from kernel.testbed import Testbed, unsupported_reason

SCENARIOS = [  # (hosts, mode, repetitions)
    (1, "full", 3),
    (10, "full", 2),
    (100, "light", 2),
]


def measure(n: int, mode: str) -> dict[str, float]:
    started = time.perf_counter()
    bed = Testbed(n, mode).up()
    try:
        up = time.perf_counter() - started
        cpu = [cpu_seconds(h.cgroup) for h in bed.hosts]
        time.sleep(1)  # let boot-time work settle before measuring memory
        memory = [h.memory_bytes() for h in bed.hosts]
    finally:
        t = time.perf_counter()
        bed.down()
        down = time.perf_counter() - t
    return {"up": up, "down": down, "mem": statistics.mean(memory), "cpu": statistics.mean(cpu)}


def cpu_seconds(cgroup: Path) -> float:
    """CPU time used so far by everything in a host (boot, install.sh, agent)."""
    for line in (cgroup / "cpu.stat").read_text().splitlines():
        if line.startswith("usage_usec "):
            return int(line.split()[1]) / 1e6
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repetition each")
    args = parser.parse_args()
    for mode in ("light", "full"):
        reason = unsupported_reason(mode)
        if reason:
            print(f"bench_testbed: cannot run: {reason}", file=sys.stderr)
            return 1
    rows = []
    load = os.getloadavg()[0]
    for n, mode, reps in SCENARIOS:
        runs = [measure(n, mode) for _ in range(1 if args.quick else reps)]
        up = statistics.median(r["up"] for r in runs)
        rows.append(
            [
                f"{n} {mode}",
                f"{up:.2f} s",
                f"{up / n:.3f} s",
                f"{statistics.median(r['cpu'] for r in runs):.2f} s",
                f"{statistics.median(r['mem'] for r in runs) / 2**20:.1f} MiB",
                f"{statistics.median(r['down'] for r in runs):.2f} s",
                len(runs),
            ]
        )
        print(rows[-1], flush=True)
    headers = ["hosts", "up (all answering)", "per host", "CPU per host", "memory per host"]
    body = table([*headers, "teardown", "runs"], rows)
    body += (
        "\n\nHosts start in parallel; *up* ends when every agent answers `/healthz` from the "
        "gateway (full hosts: systemd booted, install.sh run, `kernel-agent.service` up). "
        "Memory per host: proportional set size (PSS) of every process in the host's cgroup, "
        "plus the tmpfs holding a full host's overlay upper layer. CPU per host: CPU time "
        "used inside the host until it answered (its cgroup's `usage_usec`): on 2 cores, N "
        "full hosts cannot be up in less than N x that / 2. Medians of *runs*. "
        f"Load average when started: {load:.1f} (other work on the machine slows *up*). "
        "Targets: a full host ready in < 3 s in parallel; 100 light hosts in < 20 s."
    )
    write_section("testbed", "Testbed: bring-up time and memory per host", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())

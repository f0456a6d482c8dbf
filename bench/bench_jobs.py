"""Jobs: time from the API call (POST /api/v1/jobs) to every run's result stored, for `uptime`
on 1 and on 100 light test hosts. Targets: 1 host < 20 ms, 100 hosts < 1 s.

Run as root: ``.venv/bin/python bench/bench_jobs.py [--quick]``. Updates the ``jobs`` section
of docs/benchmarks.md. The server is in-process (the Flask app through its test client, the
real job runner thread, SQLite in a temporary data dir); the agents are real, in network
namespaces. "Cold" is the first job (new connections), "warm" later ones (kept-alive).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import select

from _report import table, write_section
from kernel.server.app import create_app
from kernel.server.auth.credentials import new_token, token_hash
from kernel.server.auth.users import create_user
from kernel.server.components import components
from kernel.server.core.db import Database
from kernel.server.models.jobs import Job
from kernel.server.models.users import ApiToken
from kernel.testbed import Testbed, unsupported_reason


def setup(bed: Testbed, data: Path):  # type: ignore[no-untyped-def]
    # No poller (it would only compete for the CPUs) and no examples (their init scripts
    # would run on light hosts, which share this machine's files).
    app = create_app(
        {
            "DATA_DIR": str(data),
            "SECRET_KEY": "bench",
            "JOB_CONCURRENCY": 128,
            "STATUS_POLLER": False,
            "INSTALL_EXAMPLES": False,
        }
    )
    db: Database = components(app).db
    with db.session() as s:
        user = create_user(s, "bench", "admin", "bench-password")
        token = new_token()
        s.add(ApiToken(user_id=user.id, name="bench", token_hash=token_hash(token)))
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    for h in bed.hosts:
        r = client.post(
            "/api/v1/servers",
            json={"name": h.name, "agent_url": h.agent_url, "agent_key": h.key},
            headers=headers,
        )
        assert r.status_code == 201, r.get_data(as_text=True)
    components(app).start()  # the background services: here the runner (and an idle scheduler)
    return app, client, headers, db


def one_job(client, headers, db: Database, bus, servers: list[str]) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    r = client.post(
        "/api/v1/jobs", json={"cmd": "uptime", "targets": {"servers": servers}}, headers=headers
    )
    assert r.status_code == 201, r.get_data(as_text=True)
    job_id = r.get_json()["id"]
    # The runner publishes "end" right after the transaction storing the last result commits.
    seq = 0
    while True:
        events = bus.after(job_id, seq, 30) or []
        if any(e.type == "end" for e in events):
            break
        seq = events[-1].seq if events else seq
    elapsed = time.perf_counter() - t0
    with db.engine.connect() as c:
        assert c.execute(select(Job.state).where(Job.id == job_id)).scalar() == "finished"
    runs = client.get(f"/api/v1/jobs/{job_id}", headers=headers).get_json()["runs"]
    bad = [x for x in runs if x["state"] != "ok"]
    assert not bad, bad[:3]
    return elapsed


def measure(n: int, reps: int) -> dict[str, float]:
    bed = Testbed(n, "light").up()
    try:
        with tempfile.TemporaryDirectory(prefix="kernel-bench-") as tmp:
            app, client, headers, db = setup(bed, Path(tmp))
            try:
                names = [h.name for h in bed.hosts]
                bus = components(app).bus
                cold = one_job(client, headers, db, bus, names)
                warm = [one_job(client, headers, db, bus, names) for _ in range(reps)]
            finally:
                components(app).runner.stop()
                db.dispose()
    finally:
        bed.down()
    return {
        "cold": cold,
        "median": statistics.median(warm),
        "best": min(warm),
        "worst": max(warm),
    }


def uptime_floor(n: int = 30) -> float:
    """Median wall time of spawning `bash -c uptime` from Python (no agent, no server)."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run(["bash", "-c", "uptime"], stdout=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    reason = unsupported_reason("light")
    if reason:
        print(f"bench_jobs: cannot make test hosts here: {reason}", file=sys.stderr)
        return 1
    reps = 10 if args.quick else 60
    load = os.getloadavg()[0]
    floor_before = uptime_floor()
    rows = []
    for n, target in ((1, 0.020), (100, 1.0)):
        m = measure(n, reps if n == 1 else max(3, reps // 12))
        ms = {k: f"{v * 1000:.1f} ms" for k, v in m.items()}
        ok = "yes" if m["median"] < target else "NO"
        rows.append(
            [n, ms["cold"], ms["median"], ms["best"], ms["worst"], f"{target * 1000:g} ms", ok]
        )
    body = (
        "`uptime` as a job: POST /api/v1/jobs until every run is stored (job `finished`).\n"
        "In-process server (test client, real runner thread, SQLite WAL), real agents on light\n"
        "test hosts. Cold = first job (new connections); the rest with kept-alive\n"
        "connections. The hosts' agents and bash share the 2 CPUs with the server; figures\n"
        f"swing with the machine's load (load average at start: {load:.1f}).\n\n"
        + table(["hosts", "cold", "warm median", "warm best", "warm worst", "target", "met"], rows)
        + "\n\nCalibration, measured in the same run: `bash -c uptime` spawned from Python"
        f" takes {floor_before * 1000:.1f} ms (median; {uptime_floor() * 1000:.1f} ms after the"
        " runs) — the part of a 1-host job no server can save; on this VM it and everything"
        " else swing by up to 2x with the neighbours' load."
        "\n\nWhere one host's time goes (medians, timestamps around the steps, docs/server.md):"
        " the create request ≈ 4 ms (token check, targets, two prepared INSERTs and the audit"
        " line, commit), then the runs go straight to the runner (no claim transaction), the"
        " agent round trip ≈ 8 ms (`uptime` itself ≈ 4.6 ms of it), storing the result and"
        " ending the job ≈ 2.5 ms. Before 2026-11-26 the same job took 40 ms, then 28 ms."
    )
    write_section("jobs", "Jobs: API call to every result stored", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())

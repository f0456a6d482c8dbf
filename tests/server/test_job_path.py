"""The job path's database work: what creating a job costs once it is committed.

No runner here: only the API's own transactions are counted."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import event

from kernel.server.models import Server

from .conftest import add_agent_server, wait_job


def test_create_answers_without_a_transaction_after_its_commit(app: Any, admin: Any) -> None:
    # On SQLite every transaction takes the write lock (BEGIN IMMEDIATE): one opened after the
    # commit (e.g. lazy-loading the runs for the answer) would hold it just when the woken
    # runner wants to claim the new runs.
    with app.extensions["kernel.db"].session() as s:
        for name in ("web-b", "web-a", "db-1"):  # joined servers (no agent needed: no runner)
            s.add(Server(name=name, agent_url="http://127.0.0.1:1", agent_key="k" * 64, tags=[]))
    seen: list[str] = []
    engine = app.extensions["kernel.db"].engine
    hooks = {name: (lambda *_a, n=name: seen.append(n)) for name in ("begin", "commit")}
    for name, fn in hooks.items():
        event.listen(engine, name, fn)
    try:
        job = admin.post("/api/v1/jobs", {"cmd": "true", "targets": {"all": True}}, expect=201)
    finally:
        for name, fn in hooks.items():
            event.remove(engine, name, fn)
    assert seen and seen[-1] == "commit", seen
    # The answer's runs are the job's runs, in the order a later read gives them.
    again = admin.get(f"/api/v1/jobs/{job['id']}")
    assert [r["id"] for r in job["runs"]] == [r["id"] for r in again["runs"]]
    assert [r["server"] for r in job["runs"]] == ["db-1", "web-a", "web-b"]
    assert all(r["state"] == "queued" for r in job["runs"])


def test_a_finished_run_does_not_make_the_runner_claim_again(
    app: Any, admin: Any, agents: Any, monkeypatch: Any
) -> None:
    # With free slots left, nothing new can be claimable when a run ends: a claim there would
    # only take the database (and, on SQLite, its write lock) from the next job's create.
    from kernel.server import runner as runner_mod

    monkeypatch.setattr(runner_mod, "IDLE_POLL", 60.0)  # only wake-ups count here
    claims: list[int] = []
    r = app.extensions["kernel.runner"]
    real_claim = r._claim

    def counting_claim(limit: int) -> Any:
        got = real_claim(limit)
        claims.append(len(got))
        return got

    monkeypatch.setattr(r, "_claim", counting_claim)
    r.start()
    (a,) = agents(1)
    add_agent_server(admin, a, "alpha")
    for i in range(2):
        time.sleep(0.2)  # settled: no wake-up (adding the server wakes it too) still pending
        before = len(claims)
        job = admin.post("/api/v1/jobs", {"cmd": "true", "targets": {"all": True}}, expect=201)
        done = wait_job(admin, job["id"])
        assert [run["state"] for run in done["runs"]] == ["ok"]
        time.sleep(0.2)  # a wake-up after the store would have claimed by now
        if i:  # the first job may share its claim with the server's wake-up
            assert claims[before:] == [1], claims

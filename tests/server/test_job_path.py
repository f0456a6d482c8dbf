"""The job path's database work: what creating a job costs once it is committed.

No runner here: only the API's own transactions are counted."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import event

from kernel.server.components import components
from kernel.server.models.servers import Server
from support.api import wait_job

from .conftest import add_agent_server


def test_create_answers_without_a_transaction_after_its_commit(app: Any, admin: Any) -> None:
    # On SQLite every transaction takes the write lock (BEGIN IMMEDIATE): one opened after the
    # commit (e.g. lazy-loading the runs for the answer) would hold it just when the woken
    # runner wants to claim the new runs.
    with components(app).db.session() as s:
        for name in ("web-b", "web-a", "db-1"):  # joined servers (no agent needed: no runner)
            s.add(Server(name=name, agent_url="http://127.0.0.1:1", agent_key="k" * 64, tags=[]))
    seen: list[str] = []
    engine = components(app).db.engine
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


def count_claims(runner: Any, monkeypatch: Any) -> list[int]:
    """Record how many runs each of the runner's claims takes (the list fills as it runs)."""
    claims: list[int] = []
    real_claim = runner._claim

    async def counting_claim(limit: int) -> Any:
        got = await real_claim(limit)
        claims.append(len(got))
        return got

    monkeypatch.setattr(runner, "_claim", counting_claim)
    return claims


def test_a_job_with_room_goes_straight_to_the_runner(
    app: Any, admin: Any, agents: Any, monkeypatch: Any
) -> None:
    # With free slots for every run, the create request writes them as sent and hands them to
    # the runner: no claim at all, and a finished run does not make the runner look for work
    # (a claim there would only take the database, on SQLite its write lock, from the next
    # job's create).
    from kernel.server.jobs import runner as runner_mod

    monkeypatch.setattr(runner_mod, "IDLE_POLL", 60.0)  # only wake-ups count here
    r = components(app).runner
    claims = count_claims(r, monkeypatch)
    r.start()
    (a,) = agents(1)
    add_agent_server(admin, a, "alpha")
    for _ in range(2):
        time.sleep(0.2)  # settled: no wake-up (adding the server wakes it too) still pending
        before = len(claims)
        job = admin.post("/api/v1/jobs", {"cmd": "true", "targets": {"all": True}}, expect=201)
        assert job["state"] == "running" and job["runs"][0]["state"] == "running"
        done = wait_job(admin, job["id"])
        assert [run["state"] for run in done["runs"]] == ["ok"]
        assert done["runs"][0]["sent_at"] is not None
        time.sleep(0.2)  # a wake-up after the store would have claimed by now
        assert claims[before:] == [], claims
    assert r._reserved == 0


def test_a_job_without_room_is_queued_and_claimed(
    tmp_path: Any, db_url: str, agents: Any, monkeypatch: Any
) -> None:
    from kernel.server.app import create_app
    from support.api import Api, make_token
    from support.servers import app_config

    app = create_app(app_config(tmp_path, db_url, JOB_CONCURRENCY=2))
    try:
        admin = Api(app.test_client(), make_token(app, "admin1", "admin"))
        r = components(app).runner
        claims = count_claims(r, monkeypatch)
        r.start()
        for i, a in enumerate(agents(3)):
            add_agent_server(admin, a, f"h{i}")
        time.sleep(0.2)
        before = len(claims)
        # 3 runs do not fit in 2 slots: all queued, then claimed 2 + 1
        job = admin.post("/api/v1/jobs", {"cmd": "sleep 0.3", "targets": {"all": True}}, expect=201)
        assert job["state"] == "queued" and {x["state"] for x in job["runs"]} == {"queued"}
        done = wait_job(admin, job["id"])
        assert [x["state"] for x in done["runs"]] == ["ok"] * 3
        assert sorted(n for n in claims[before:] if n) == [1, 2], claims
        # one run fits again: straight in
        one = admin.post(
            "/api/v1/jobs", {"cmd": "true", "targets": {"servers": ["h0"]}}, expect=201
        )
        assert one["runs"][0]["state"] == "running"
        assert wait_job(admin, one["id"])["state"] == "finished"
        assert r._reserved == 0
    finally:
        components(app).runner.stop()
        components(app).db.dispose()


def test_a_job_made_while_the_runner_recovers_is_not_taken_for_a_left_over(
    app: Any, admin: Any, agents: Any, monkeypatch: Any
) -> None:
    # Right after a start the runner re-attaches the runs a previous process left running;
    # a job created meanwhile must not be handed over as `running` (the recovery would take
    # it for a left-over, find no record on the agent yet, and end it `lost`).
    import time as _time

    from kernel.server.jobs import journal

    real = journal.adopt

    def slow_adopt(*args: Any) -> Any:
        _time.sleep(0.5)  # a slow database, or many runs to re-attach
        return real(*args)

    monkeypatch.setattr(journal, "adopt", slow_adopt)
    (a,) = agents(1)
    add_agent_server(admin, a, "h1")
    components(app).runner.start()
    job = admin.post("/api/v1/jobs", {"cmd": "echo fine", "targets": {"all": True}}, expect=201)
    assert [r["state"] for r in job["runs"]] == ["queued"]  # claimed after the recovery
    done = wait_job(admin, job["id"])
    assert [(r["state"], r["stdout"]) for r in done["runs"]] == [("ok", "fine\n")], done["runs"]

"""The job path's database work: what creating a job costs once it is committed.

No runner here: only the API's own transactions are counted."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event

from kernel.server.models import Server


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

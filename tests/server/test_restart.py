"""A server killed (SIGKILL) in the middle of a job: after the restart every run re-attaches to
its agent or ends with a reason; none stays running, none runs twice."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from kernel.server.components import components
from support.servers import ServerProc

pytestmark = pytest.mark.slow


def _wait(api, job_id, pred, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        job = api.get(f"/api/v1/jobs/{job_id}?output=1").json()
        if pred(job):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.05)


def test_sigkill_mid_job_reattaches_and_runs_nothing_twice(tmp_path: Path, db_url, agents):
    ags = agents(3)
    data = tmp_path / "srv"
    data.mkdir()
    # Two slots for three hosts: at the kill, two runs are on their agents, one still queued.
    server = ServerProc(data, db_url, KERNEL_JOB_CONCURRENCY="2")
    try:
        server.start()
        server.login()
        with server.api() as api:
            for i, a in enumerate(ags):
                r = api.post(
                    "/api/v1/servers",
                    json={"name": f"h{i}", "agent_url": a.url, "agent_key": a.key},
                )
                assert r.status_code == 201, r.text
            marks = tmp_path / "executions"
            cmd = f"echo start; echo x >> {marks}; sleep 2; echo done"
            r = api.post("/api/v1/jobs", json={"cmd": cmd, "targets": {"all": True}})
            job_id = r.json()["id"]
            _wait(api, job_id, lambda j: j["summary"]["running"] == 2)
            deadline = time.monotonic() + 10
            while not (marks.exists() and marks.read_text() == "x\nx\n"):  # on their agents
                assert time.monotonic() < deadline
                time.sleep(0.02)
        server.kill()
        server.start()
        with server.api() as api:
            job = _wait(api, job_id, lambda j: j["state"] == "finished", timeout=40)
        states = {r["server"]: r["state"] for r in job["runs"]}
        assert states == {"h0": "ok", "h1": "ok", "h2": "ok"}, job["runs"]
        for run in job["runs"]:
            assert run["stdout"] == "start\ndone\n"
        assert marks.read_text() == "x\nx\nx\n"  # each run executed exactly once
    finally:
        server.stop()


def test_run_unknown_to_its_agent_ends_lost(app, admin, agents):
    """A run journalled as sent that the agent never got (crash between journal and send)."""
    from kernel.server.models.jobs import Run
    from support.api import wait_job

    from .conftest import add_agent_server

    (a,) = agents(1)
    add_agent_server(admin, a, "alpha")
    job = admin.post("/api/v1/jobs", {"cmd": "true", "targets": {"all": True}}, expect=201)
    db = components(app).db
    with db.session() as s:
        run = s.get(Run, job["runs"][0]["id"])
        run.state = "running"
        from kernel.server.core.db import utcnow

        run.sent_at = utcnow()
    components(app).runner.start()
    run = wait_job(admin, job["id"])["runs"][0]
    assert run["state"] == "lost"
    assert "no record" in run["error"]


def test_reattached_runs_count_against_the_concurrency(tmp_path, db_url, agents):
    """After a restart, runs re-attached from the journal hold slots: queued work waits."""
    from kernel.agent_client import AgentClient
    from kernel.server.app import create_app
    from kernel.server.core.db import utcnow
    from kernel.server.models.jobs import Run
    from support.api import Api, make_token, wait_job
    from support.servers import app_config

    from .conftest import add_agent_server

    app = create_app(app_config(tmp_path, db_url, JOB_CONCURRENCY=2))
    try:
        admin = Api(app.test_client(), make_token(app, "admin1", "admin"))
        a, b = agents(2)
        add_agent_server(admin, a, "alpha")
        add_agent_server(admin, b, "beta")
        # Two runs a previous process sent and journalled (still going on their agents) ...
        old = admin.post("/api/v1/jobs", {"cmd": "sleep 1.5", "targets": {"all": True}}, expect=201)
        db = components(app).db
        with db.session() as s:
            for r in old["runs"]:
                run = s.get(Run, r["id"])
                run.state, run.sent_at = "running", utcnow()
        for agent, r in zip((a, b), old["runs"], strict=True):
            with AgentClient(agent.url, agent.key) as c:
                events = c.stream("sleep 1.5", id=r["id"])
                assert next(events)["event"] == "started"  # then left running
                events.close()
        # ... and one queued after them.
        new = admin.post(
            "/api/v1/jobs", {"cmd": "true", "targets": {"servers": ["alpha"]}}, expect=201
        )
        assert new["runs"][0]["state"] == "queued"
        components(app).runner.start()
        time.sleep(0.5)
        assert admin.get(f"/api/v1/jobs/{new['id']}")["runs"][0]["state"] == "queued"
        assert [r["state"] for r in wait_job(admin, old["id"])["runs"]] == ["ok", "ok"]
        assert wait_job(admin, new["id"])["runs"][0]["state"] == "ok"
    finally:
        components(app).runner.stop()
        components(app).db.dispose()

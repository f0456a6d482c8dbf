"""Schedules over real agents on loopback, with a controlled clock: each firing is claimed
once (restarts, a second process, a race), missed firings follow the schedule's policy,
overlapping firings are skipped when asked, targets are resolved at each firing; and the API
with garbage in it."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from kernel.server.app import create_app
from kernel.server.components import components
from kernel.server.models.jobs import Job
from kernel.server.models.schedules import Firing, Schedule
from kernel.server.schedules.firing import fire_due, fire_schedule
from support.api import Api, make_token, wait_job
from support.servers import app_config

from .conftest import add_agent_server

GRACE = 60.0


def iso_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def make(api: Api, name: str = "nightly", **fields: Any) -> dict[str, Any]:
    body = {
        "name": name,
        "cmd": "echo fired",
        "targets": {"all": True},
        "cron": "*/5 * * * *",
        "timezone": "UTC",
        **fields,
    }
    return api.post("/api/v1/schedules", body, expect=201)  # type: ignore[no-any-return]


def fire(app: Any, now: dt.datetime) -> dt.datetime | None:
    parts = components(app)
    return fire_due(parts.db, parts.runner, now=now, grace=GRACE)


def firings(app: Any, schedule_id: int) -> list[Firing]:
    with components(app).db.reading() as s:
        return list(
            s.scalars(select(Firing).where(Firing.schedule_id == schedule_id).order_by(Firing.id))
        )


def down(app: Any) -> None:
    """The process's end: its runner and scheduler stop (started here one by one, they are
    not in the components' started list), then the database is closed."""
    parts = components(app)
    parts.runner.stop()
    parts.scheduler.stop()
    parts.close()


def job_count(app: Any) -> int:
    with components(app).db.reading() as s:
        return int(s.scalar(select(func.count(Job.id)).where(Job.kind == "schedule")) or 0)


# -- firing ---------------------------------------------------------------------------------
def test_a_planned_time_fires_once(app, admin, runner, agents):
    (a,) = agents(1)
    add_agent_server(admin, a, "alpha")
    sched = make(admin)
    planned = iso_time(sched["next_at"])
    assert sched["next_firings"][:2] == [
        sched["next_at"],
        (planned + dt.timedelta(minutes=5)).isoformat().replace("+00:00", "Z"),
    ]
    assert fire(app, planned - dt.timedelta(seconds=1)) == planned  # not yet
    assert firings(app, sched["id"]) == []
    ahead = fire(app, planned + dt.timedelta(seconds=0.3))
    assert ahead == planned + dt.timedelta(minutes=5)
    for later in (0.3, 10, 299):  # looked at again before the next planned time: nothing new
        fire(app, planned + dt.timedelta(seconds=later))
    (f,) = firings(app, sched["id"])
    assert (f.state, f.planned_at, f.by, f.note) == ("fired", planned, "scheduler", None)
    job = wait_job(admin, f.job_id)
    assert (job["kind"], job["state"], job["created_by"]) == (
        "schedule",
        "finished",
        "schedule:nightly",
    )
    assert job["meta"] == {
        "schedule_id": sched["id"],
        "schedule": "nightly",
        "planned_at": sched["next_at"],
        "late": False,
    }
    assert job["runs"][0]["stdout"] == "fired\n" and job["runs"][0]["state"] == "ok"
    shown = admin.get(f"/api/v1/schedules/{sched['id']}")
    assert shown["last_firing"]["job_state"] == "finished"
    assert shown["last_firing"]["summary"] == {"ok": 1}
    assert shown["next_at"] == (planned + dt.timedelta(minutes=5)).isoformat().replace(
        "+00:00", "Z"
    )
    audit = admin.get("/api/v1/audit?action=schedule.fired")["entries"]
    assert audit[0]["actor"] == "scheduler" and audit[0]["hosts"] == ["alpha"]
    assert audit[0]["result"] == f"fired job {f.job_id}"


def test_two_processes_racing_fire_once(app, admin, runner, agents, tmp_path, db_url):
    """A second app on the same database (a replica, or a restarted server that overlaps the
    old one) and several threads claim the same planned time at once: one job."""
    (a,) = agents(1)
    add_agent_server(admin, a, "alpha")
    sched = make(admin)
    other = create_app(app_config(tmp_path, db_url))  # the same data dir and database
    try:
        now = iso_time(sched["next_at"]) + dt.timedelta(seconds=1)
        start = threading.Barrier(4)

        def claim(which: Any) -> None:
            parts = components(which)
            start.wait()
            fire_schedule(parts.db, parts.runner, sched["id"], now=now, grace=GRACE)

        threads = [threading.Thread(target=claim, args=(x,)) for x in (app, app, other, other)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(30)
        assert [f.state for f in firings(app, sched["id"])] == ["fired"]
        assert job_count(app) == 1
    finally:
        down(other)


def test_the_unique_row_refuses_a_second_claim(app, admin, runner, agents):
    """Even if the guard on next_at were passed (a bug, a hand-edited row), the unique
    (schedule, planned time) row makes the second claim fail and roll its job back."""
    (a,) = agents(1)
    add_agent_server(admin, a, "alpha")
    sched = make(admin)
    planned = iso_time(sched["next_at"])
    fire(app, planned + dt.timedelta(seconds=1))
    assert job_count(app) == 1
    with components(app).db.session() as s:  # put next_at back, as if nothing had fired
        s.get(Schedule, sched["id"]).next_at = planned
    assert fire_schedule(components(app).db, components(app).runner, sched["id"],
                         now=planned + dt.timedelta(seconds=2), grace=GRACE) is None  # fmt: skip
    assert job_count(app) == 1
    assert len(firings(app, sched["id"])) == 1


def test_restart_in_the_middle_of_a_firing(tmp_path: Path, db_url, agents):
    """The server stops while a firing's job runs: the restarted one neither fires that
    planned time again nor runs its job twice (the run re-attaches to its agent)."""
    (a,) = agents(1)
    marks = tmp_path / "executions"
    config = app_config(tmp_path, db_url)
    first = create_app(config)
    api = Api(first.test_client(), make_token(first, "op", "admin"))
    add_agent_server(api, a, "alpha")
    sched = make(api, cmd=f"echo x >> {marks}; sleep 2; echo done")
    planned = iso_time(sched["next_at"])
    parts = components(first)
    parts.runner.start()
    fire(first, planned + dt.timedelta(seconds=1))
    (f,) = firings(first, sched["id"])
    deadline = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=10)
    while not marks.exists():
        assert dt.datetime.now(dt.UTC) < deadline
    parts.runner.stop()  # stopped with the run on its agent
    with parts.db.reading() as s:
        assert s.get(Job, f.job_id).state == "running"  # left running: to re-attach
    down(first)

    second = create_app(config)
    try:
        components(second).runner.start()
        api2 = Api(second.test_client(), make_token(second, "op2", "admin"))
        for later in (2, 30):  # the same planned time, looked at again after the restart
            fire(second, planned + dt.timedelta(seconds=later))
        assert len(firings(second, sched["id"])) == 1
        job = wait_job(api2, f.job_id)
        assert job["runs"][0]["state"] == "ok" and job["runs"][0]["stdout"].endswith("done\n")
        assert marks.read_text() == "x\n"  # ran once
    finally:
        down(second)


@pytest.mark.parametrize("policy", ["skip", "run_once"])
def test_server_down_through_firings(tmp_path: Path, db_url, agents, policy):
    """The server is stopped before a planned time and started again 17 minutes later (four
    planned times of a 5-minute schedule passed): ``skip`` records them in one missed row
    with a note, ``run_once`` runs once, late, for all of them. Then it goes on as planned."""
    (a,) = agents(1)
    config = app_config(tmp_path, db_url)
    first = create_app(config)
    api = Api(first.test_client(), make_token(first, "op", "admin"))
    add_agent_server(api, a, "alpha")
    sched = make(api, missed=policy)
    planned = iso_time(sched["next_at"])
    down(first)

    second = create_app(config)
    try:
        components(second).runner.start()
        api2 = Api(second.test_client(), make_token(second, "op2", "admin"))
        back = planned + dt.timedelta(minutes=17)
        assert fire(second, back) == planned + dt.timedelta(minutes=20)
        fire(second, back + dt.timedelta(seconds=5))
        (f,) = firings(second, sched["id"])
        assert f.planned_at == planned and f.missed_count == 4
        assert "the server was not running at 4 planned times" in f.note
        if policy == "skip":
            assert f.state == "missed" and f.job_id is None
            assert "not run (policy skip)" in f.note
            assert job_count(second) == 0
        else:
            assert f.state == "fired" and "ran once, late (policy run_once)" in f.note
            job = wait_job(api2, f.job_id)
            assert job["meta"]["late"] is True and job["runs"][0]["state"] == "ok"
            assert job_count(second) == 1
        shown = api2.get(f"/api/v1/schedules/{sched['id']}")
        assert shown["last_firing"]["note"] == f.note
        # Back to normal: the next planned time fires on time.
        fire(second, planned + dt.timedelta(minutes=20, seconds=1))
        assert firings(second, sched["id"])[-1].state == "fired"
        assert firings(second, sched["id"])[-1].note is None
    finally:
        down(second)


def test_back_just_in_time_for_one_firing(app, admin, runner, agents):
    (a,) = agents(1)
    add_agent_server(admin, a, "alpha")
    sched = make(admin, missed="run_once")
    planned = iso_time(sched["next_at"])
    fire(app, planned + dt.timedelta(minutes=15, seconds=20))  # 3 missed, the 4th on time
    missed, fired = firings(app, sched["id"])
    assert (missed.state, missed.missed_count, missed.planned_at) == ("missed", 3, planned)
    assert "the firing due now ran on time instead" in missed.note
    assert (fired.state, fired.planned_at) == ("fired", planned + dt.timedelta(minutes=15))
    assert job_count(app) == 1


def test_skip_if_the_previous_firing_is_still_running(app, admin, runner, agents):
    (a,) = agents(1)
    add_agent_server(admin, a, "alpha")
    slow = make(admin, "slow", cmd="sleep 30", skip_if_running=True)
    both = make(admin, "both", cmd="sleep 30")
    planned = iso_time(slow["next_at"])
    fire(app, planned + dt.timedelta(seconds=1))
    fire(app, planned + dt.timedelta(minutes=5, seconds=1))
    first, second = firings(app, slow["id"])
    assert first.state == "fired"
    assert second.state == "skipped" and second.job_id is None
    assert second.note == f"the previous firing's job {first.job_id} was still running"
    assert [f.state for f in firings(app, both["id"])] == ["fired", "fired"]
    # By hand too: refused while it runs.
    err = admin.post(f"/api/v1/schedules/{slow['id']}/run", expect=409)
    assert f"job {first.job_id} is still running" in err["message"]
    for f in firings(app, slow["id"]) + firings(app, both["id"]):
        if f.job_id:
            admin.post(f"/api/v1/jobs/{f.job_id}/cancel")


def test_targets_are_resolved_at_each_firing(app, admin, runner, agents):
    a, b = agents(2)
    add_agent_server(admin, a, "alpha", ["web"])
    sched = make(admin, targets={"tags": ["web"]})
    planned = iso_time(sched["next_at"])
    fire(app, planned + dt.timedelta(seconds=1))
    add_agent_server(admin, b, "beta", ["web"])  # a new server with the tag
    fire(app, planned + dt.timedelta(minutes=5, seconds=1))
    one, two = firings(app, sched["id"])
    assert [r["server"] for r in wait_job(admin, one.job_id)["runs"]] == ["alpha"]
    assert [r["server"] for r in wait_job(admin, two.job_id)["runs"]] == ["alpha", "beta"]


def test_a_firing_with_no_server_is_an_error_row(app, admin, runner):
    sched = make(admin, targets={"tags": ["nobody-has-this"]})
    planned = iso_time(sched["next_at"])
    assert fire(app, planned + dt.timedelta(seconds=1)) == planned + dt.timedelta(minutes=5)
    (f,) = firings(app, sched["id"])
    assert (f.state, f.job_id) == ("error", None)
    assert f.note == "no job was made: no joined server matches the targets"
    assert admin.get("/api/v1/audit?action=schedule.error")["entries"][0]["result"] == "error"


def test_a_schedule_that_cannot_be_read_any_more_is_disabled(app, admin):
    """A zone that left the tz database after an upgrade (or a row edited by hand): one error
    firing saying why, and the schedule stops until it is edited."""
    sched = make(admin)
    with components(app).db.session() as s:
        s.get(Schedule, sched["id"]).timezone = "Gone/Zone"
    fire(app, iso_time(sched["next_at"]) + dt.timedelta(seconds=1))
    (f,) = firings(app, sched["id"])
    assert f.state == "error" and "unknown time zone 'Gone/Zone'" in f.note
    assert f.note.endswith("the schedule is disabled until it is edited")
    shown = admin.get(f"/api/v1/schedules/{sched['id']}")
    assert (shown["enabled"], shown["next_at"], shown["next_firings"]) == (False, None, [])
    fixed = admin.patch(f"/api/v1/schedules/{sched['id']}", {"timezone": "UTC", "enabled": True})
    assert fixed["enabled"] and fixed["next_at"]


def test_the_scheduler_wakes_for_the_next_planned_time(app, admin, runner, agents):
    """The background service itself: it sleeps until the next planned time (here moved to
    a moment ago), fires it and sleeps again."""
    (a,) = agents(1)
    add_agent_server(admin, a, "alpha")
    sched = make(admin)
    scheduler = components(app).scheduler
    scheduler.start()
    try:
        soon = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=0.5)
        with components(app).db.session() as s:
            s.get(Schedule, sched["id"]).next_at = soon
        scheduler.wake()
        deadline = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=10)
        while not firings(app, sched["id"]):
            assert dt.datetime.now(dt.UTC) < deadline
            threading.Event().wait(0.05)
        (f,) = firings(app, sched["id"])
        assert f.planned_at == soon and f.created_at >= soon
        assert wait_job(admin, f.job_id)["runs"][0]["stdout"] == "fired\n"
    finally:
        scheduler.stop()


# -- the API ----------------------------------------------------------------------------------
def test_run_now_edit_disable_delete(app, admin, runner, agents):
    (a,) = agents(1)
    add_agent_server(admin, a, "alpha")
    sched = make(admin, description="über", env={"X": "1"}, stdin=None)
    answer = admin.post(f"/api/v1/schedules/{sched['id']}/run", expect=201)
    assert answer["firing"]["by"] == "admin1" and answer["firing"]["note"] == "run by hand"
    assert answer["job"]["meta"]["by_hand"] == "admin1"
    assert wait_job(admin, answer["job"]["id"])["runs"][0]["state"] == "ok"
    assert admin.get(f"/api/v1/schedules/{sched['id']}")["next_at"] == sched["next_at"]

    off = admin.patch(f"/api/v1/schedules/{sched['id']}", {"enabled": False})
    assert (off["enabled"], off["next_at"], off["next_firings"]) == (False, None, [])
    on = admin.patch(f"/api/v1/schedules/{sched['id']}", {"enabled": True, "cron": "@hourly"})
    assert on["cron"] == "@hourly" and on["next_at"].endswith(":00:00Z")
    assert on["cron_text"] == "At the start of every hour"
    bad = admin.patch(f"/api/v1/schedules/{sched['id']}", {"cron": "0 0 30 2 *"}, expect=400)
    assert "day-of-month" in bad["message"]
    bad = admin.patch(f"/api/v1/schedules/{sched['id']}", {"timezone": "Nowhere/City"}, expect=400)
    assert "unknown time zone" in bad["message"]
    assert admin.get(f"/api/v1/schedules/{sched['id']}")["cron"] == "@hourly"  # unchanged
    script = admin.patch(f"/api/v1/schedules/{sched['id']}", {"cmd": "bash -s", "stdin": "echo s"})
    assert script["has_stdin"] and script["stdin"] == "echo s"
    cleared = admin.patch(f"/api/v1/schedules/{sched['id']}", {"stdin": ""})
    assert not cleared["has_stdin"]

    listed = admin.get("/api/v1/schedules")
    assert [s["name"] for s in listed["schedules"]] == ["nightly"]
    assert listed["schedules"][0]["last_firing"]["by"] == "admin1"
    assert listed["schedules"][0]["env"] == ["X"]  # names only

    page = admin.get(f"/api/v1/schedules/{sched['id']}/firings?limit=1")
    assert len(page["firings"]) == 1
    gone = admin.delete(f"/api/v1/schedules/{sched['id']}")
    assert gone["name"] == "nightly"
    admin.get(f"/api/v1/schedules/{sched['id']}", expect=404)
    assert admin.get(f"/api/v1/jobs/{answer['job']['id']}")["kind"] == "schedule"  # stays
    actions = {e["action"] for e in admin.get("/api/v1/audit")["entries"]}
    assert {"schedule.create", "schedule.run", "schedule.edit", "schedule.delete"} <= actions


def test_roles(app, as_role):
    viewer, operator = as_role("viewer"), as_role("operator")
    make(operator, "mine")
    assert viewer.get("/api/v1/schedules")["schedules"][0]["name"] == "mine"
    viewer.post("/api/v1/schedules", {"name": "x"}, expect=403)
    viewer.patch("/api/v1/schedules/1", {"enabled": False}, expect=403)
    viewer.post("/api/v1/schedules/1/run", expect=403)


def test_preview(admin):
    got = admin.get("/api/v1/schedules/preview?cron=30+2+*+*+*&timezone=Europe/Berlin&count=3")
    assert got["cron_text"] == "At 02:30 every day"
    assert len(got["next_firings"]) == len(got["next_firings_local"]) == 3
    assert all(t[10:19] == "T02:30:00" for t in got["next_firings_local"])
    err = admin.get("/api/v1/schedules/preview?cron=nope&timezone=UTC", expect=400)
    assert "needs 5 fields" in err["message"]


BAD_BODIES = [
    ({"cron": "garbage"}, "needs 5 fields"),
    ({"cron": "* * * * * *"}, "it has 6"),
    ({"cron": "99 * * * *"}, "bad minute"),
    ({"cron": ""}, "'cron' must have at least 1 character"),
    ({"cron": "* * * * *\x00"}, "'cron' must not contain a NUL"),
    ({"timezone": "Mars/Base"}, "unknown time zone 'Mars/Base'"),
    ({"timezone": "../../etc/passwd"}, "unknown time zone"),
    ({"timezone": ""}, "'timezone' must have at least 1 character"),
    ({"timezone": None}, "'timezone' must be a string"),
    ({"missed": "twice"}, "'missed' must be one of skip, run_once"),
    ({"targets": {}}, "choose targets"),
    ({"targets": {"servers": ["nosuch"]}}, "no such server(s): nosuch"),
    ({"name": "bad name"}, "'name' must be"),
    ({"timeout": 0}, "'timeout' must be greater than or equal to 0.1"),
    ({"cmd": " "}, "'cmd' must not be empty"),
    ({"extra": 1}, "unknown field(s): extra"),
]


def test_bad_schedules_are_clear_400s(admin):
    for change, says in BAD_BODIES:
        body = {"name": "n", "cmd": "true", "targets": {"all": True}, "cron": "* * * * *",
                "timezone": "UTC", **change}  # fmt: skip
        err = admin.post("/api/v1/schedules", body, expect=400)
        assert says in err["message"], (change, err)
    assert admin.get("/api/v1/schedules")["schedules"] == []


def test_garbage_bytes_and_duplicates(admin):
    for raw in (b"\xff\xfe", b'{"name": "\\ud800"}', b"[" * 5000, b"", b"null"):
        r = admin.call("POST", "/api/v1/schedules", data=raw, content_type="application/json")
        assert r.status_code == 400, (raw[:20], r.text)
    make(admin, "twice")
    err = admin.post("/api/v1/schedules", {"name": "twice", "cmd": "true",
                     "targets": {"all": True}, "cron": "* * * * *", "timezone": "UTC"},
                     expect=409)  # fmt: skip
    assert "exists" in err["message"]
    make(admin, "other")
    err = admin.patch("/api/v1/schedules/2", {"name": "twice"}, expect=409)
    admin.get("/api/v1/schedules/999999", expect=404)
    admin.get("/api/v1/schedules/99999999999", expect=404)
    admin.post("/api/v1/schedules/999/run", expect=404)

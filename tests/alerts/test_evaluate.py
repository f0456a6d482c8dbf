"""Evaluation rounds on a real database with a controlled clock: each rule kind raises and
clears its alerts, hold times keep flapping quiet, steps are idempotent (two evaluators never
open one problem twice), and the outbox delivers each event once to a real HTTP sink, with
bounded, recorded retries when the target is down."""

from __future__ import annotations

import datetime as dt
import time

from sqlalchemy import func, select

from kernel.server.alerts import channels, delivery
from kernel.server.alerts.evaluate import Outbox, evaluate, plan
from kernel.server.alerts.evaluate import apply as apply_change
from kernel.server.alerts.snapshot import read
from kernel.server.components import components
from kernel.server.models.alerts import Alert, AlertDelivery, AlertNotification
from kernel.server.models.jobs import Job, Run
from kernel.server.models.status import MetricSample

from .conftest import add_host, set_status, unit

RULES = "/api/v1/alerts/rules"
GAP = 90.0


def rnd(app, now, units=None):
    return evaluate(components(app).db, units or {}, now=now, max_gap=GAP)


def deliver(app, now, attempts=5, retry_after=1.0):
    db = components(app).db
    when = dt.datetime.fromtimestamp(now, dt.UTC)
    groups = delivery.claim(db, when)
    for g in groups:
        sent = channels.send(g.url, g.message.title, g.message.body, g.event, 3.0)
        delivery.record(db, g.ids, sent, when, attempts=attempts, retry_after=retry_after)
    return groups


def alerts(app):
    with components(app).db.reading() as s:
        return s.scalars(select(Alert).order_by(Alert.id)).all()


def live(app):
    return [a for a in alerts(app) if a.resolved_at is None]


def channel(admin, sink):
    return admin.post("/api/v1/alerts/channels", {"name": "sink", "url": sink.url()}, expect=201)


def test_offline_opens_after_n_seconds_and_resolves_after_the_hold(app, admin, sink):
    channel(admin, sink)
    admin.post(RULES, {"name": "down", "kind": "offline", "seconds": 60.0, "hold_resolve": 10.0},
               expect=201)  # fmt: skip
    now = time.time()
    sid = add_host(app, "web1", state="offline", last_ok_at=now - 30)
    add_host(app, "web2")
    assert rnd(app, now)["changes"] == {"create_pending": 1}
    assert [(a.state, a.server_name) for a in live(app)] == [("pending", "web1")]
    assert deliver(app, now) == []  # a pending alert tells nobody
    assert rnd(app, now + 29)["changes"] == {"update": 1}
    assert rnd(app, now + 31)["changes"] == {"open": 1}
    deliver(app, now + 31)
    assert sink.titles() == ["[Kernel] PROBLEM web1: offline"]
    assert "not answering for 61 s" in sink.got[0]["body"]["message"]
    assert sink.got[0]["body"]["type"] == "failure"
    # back, gone again, back within the hold: nobody is told
    set_status(app, sid, state="online")
    assert rnd(app, now + 40)["changes"] == {"resolving": 1}
    set_status(app, sid, state="offline")
    assert rnd(app, now + 45)["changes"] == {"reopen": 1}
    set_status(app, sid, state="online")
    rnd(app, now + 46)
    assert rnd(app, now + 50)["changes"] == {}
    assert rnd(app, now + 57)["changes"] == {"resolve": 1}
    deliver(app, now + 57)
    assert sink.titles() == ["[Kernel] PROBLEM web1: offline", "[Kernel] RESOLVED web1: offline"]
    assert sink.got[1]["body"]["type"] == "success"
    (a,) = alerts(app)
    assert a.state == "resolved" and a.resolution == "cleared" and a.opened_at is not None
    assert rnd(app, now + 60)["changes"] == {}


def test_a_host_back_before_n_seconds_is_never_told(app, admin, sink):
    channel(admin, sink)
    admin.post(RULES, {"name": "down", "kind": "offline", "seconds": 60.0}, expect=201)
    now = time.time()
    sid = add_host(app, "web1", state="offline", last_ok_at=now - 5)
    rnd(app, now)
    set_status(app, sid, state="online")
    assert rnd(app, now + 10)["changes"] == {"drop": 1}
    assert alerts(app) == [] and deliver(app, now + 10) == []


def test_disk_per_mount_limited_by_tag_and_unknown_while_offline(app, admin):
    admin.post(RULES, {"name": "disk", "kind": "disk", "percent": 90.0, "tags": ["web"],
                       "hold_resolve": 0.0}, expect=201)  # fmt: skip
    full = {"disks": [{"mount": "/", "used": 95, "available": 5},
                      {"mount": "/srv", "used": 10, "available": 90}]}  # fmt: skip
    sid = add_host(app, "web1", tags=["web"], metrics=full)
    add_host(app, "db1", tags=["db"], metrics=full)  # not in the rule's scope
    now = time.time()
    assert rnd(app, now)["changes"] == {"create_open": 1}
    (a,) = live(app)
    assert (a.server_name, a.subject, a.value, a.state) == ("web1", "disk /", 95.0, "open")
    set_status(app, sid, state="offline")  # its disks are as of the last probe: unknown
    assert rnd(app, now + 10)["changes"] == {} and live(app)[0].state == "open"
    set_status(app, sid, state="online", metrics={"disks": [{"mount": "/", "used": 50,
                                                             "available": 50}]})  # fmt: skip
    assert rnd(app, now + 20)["changes"] == {"resolve": 1}


def test_service_failed_or_inactive_where_it_was_active(app, admin):
    admin.post(RULES, {"name": "svc", "kind": "service", "hold_resolve": 0.0}, expect=201)
    units = {"sums.service": "sums", "web.service": "hello-web"}
    sid = add_host(app, "web1", units={"sums.service": unit("inactive"),
                                       "web.service": unit("active", "running")})  # fmt: skip
    now = time.time()
    assert rnd(app, now, units)["changes"] == {}  # sums was never seen active: not a problem
    set_status(app, sid, units={"sums.service": unit("inactive"),
                                "web.service": unit("inactive", "dead")})  # fmt: skip
    assert rnd(app, now + 1, units)["changes"] == {"create_open": 1}
    (a,) = live(app)
    assert a.subject == "service hello-web" and "inactive on web1" in a.summary
    set_status(app, sid, units={"sums.service": unit("failed"),
                                "web.service": unit("active", "running")})  # fmt: skip
    changes = rnd(app, now + 2, units)["changes"]
    assert changes == {"create_open": 1, "resolve": 1}
    assert [a.subject for a in live(app)] == ["service sums"]
    # removed from the host: forgotten, so a fresh deploy that is not started is not a problem
    set_status(app, sid, units={"web.service": unit("inactive", installed=False)})
    rnd(app, now + 3, units)
    set_status(app, sid, units={"web.service": unit("inactive")})
    assert rnd(app, now + 4, units)["changes"] == {}


def test_load_above_for_minutes(app, admin):
    admin.post(RULES, {"name": "load", "kind": "load", "above": 2.0, "minutes": 2.0,
                       "hold_resolve": 0.0}, expect=201)  # fmt: skip
    sid = add_host(app, "web1")
    now = time.time()
    with components(app).db.session() as s:
        for i in range(10):  # every 30 s, the last one now: 4.0 for the last 3 minutes
            t = now - 270 + 30 * i
            s.add(MetricSample(server_id=sid, t=t, count=1,
                               values={"load1": 4.0 if i >= 3 else 0.5}))  # fmt: skip
    assert rnd(app, now)["changes"] == {"create_open": 1}
    (a,) = live(app)
    assert a.subject == "load load1" and a.value == 4.0 and "above 2 for 3 min" in a.summary
    with components(app).db.session() as s:
        s.add(MetricSample(server_id=sid, t=now + 30, count=1, values={"load1": 1.0}))
    assert rnd(app, now + 30)["changes"] == {"resolve": 1}


def add_job(app, kind, meta, runs, *, parent=None, finished=None):
    with components(app).db.session() as s:
        job = Job(kind=kind, title="backup", cmd="backup", meta=meta, state="finished",
                  finished_at=finished or dt.datetime.now(dt.UTC), parent_id=parent,
                  env={}, targets={})  # fmt: skip
        s.add(job)
        s.flush()
        for i, (sid, name, state) in enumerate(runs):
            s.add(Run(id=f"{job.id}x{i}", job_id=job.id, server_id=sid, server_name=name,
                      state=state, exit_code=1 if state == "failed" else 0))  # fmt: skip
        return job.id


def test_a_failed_scheduled_firing_opens_and_the_next_good_one_resolves(app, admin):
    admin.post(RULES, {"name": "jobs", "kind": "job", "kinds": ["schedule"],
                       "hold_resolve": 0.0}, expect=201)  # fmt: skip
    w1, w2 = add_host(app, "web1"), add_host(app, "web2")
    add_job(app, "command", {}, [(w1, "web1", "failed")])  # not a schedule: not this rule's
    add_job(app, "schedule", {"schedule_id": 3}, [(w1, "web1", "failed"), (w2, "web2", "ok")])
    now = time.time() + 1
    assert rnd(app, now)["changes"] == {"create_open": 1}
    (a,) = live(app)
    assert (a.server_name, a.subject) == ("web1", "schedule 3")
    assert "failed on web1 (exit 1)" in a.summary and a.detail["job_id"] > 0
    add_job(app, "schedule", {"schedule_id": 3}, [(w1, "web1", "ok"), (w2, "web2", "ok")])
    assert rnd(app, time.time() + 2)["changes"] == {"resolve": 1}


def test_two_evaluators_never_open_one_problem_twice(app, admin, sink):
    """Both read the same state and both try every step: the second's inserts hit the live
    key's unique index, its compare-and-sets find the state moved on."""
    channel(admin, sink)
    admin.post(RULES, {"name": "down", "kind": "offline", "seconds": 1.0, "hold_resolve": 0.0},
               expect=201)  # fmt: skip
    now = time.time()
    sid = add_host(app, "web1", state="offline", last_ok_at=now - 30)
    db = components(app).db

    def race(at):
        with db.reading() as s:
            snap = read(s, at, GAP)
        steps = [plan(snap, {}, GAP), plan(snap, {}, GAP)]
        won = []
        for changes in steps:
            with db.session() as s:
                box = Outbox(
                    s, dt.datetime.fromtimestamp(at, dt.UTC), lambda _i: None, "b", _channels(s)
                )
                won.append(sum(apply_change(s, ch, box.now, box) for ch in changes))
        return won

    assert race(now) == [1, 0]
    with db.reading() as s:
        assert s.scalar(select(func.count()).select_from(Alert)) == 1
        assert s.scalar(select(func.count()).select_from(AlertNotification)) == 1
    set_status(app, sid, state="online")
    assert race(now + 5) == [1, 0]
    with db.reading() as s:
        assert s.scalar(select(func.count()).select_from(AlertNotification)) == 2
    deliver(app, now + 5)
    assert len(sink.got) == 2


def _channels(s):
    from kernel.server.models.alerts import AlertChannel

    return {c.id: c.name for c in s.scalars(select(AlertChannel))}


def test_one_message_per_round_and_channel_for_many_problems(app, admin, sink):
    channel(admin, sink)
    admin.post(RULES, {"name": "down", "kind": "offline", "seconds": 10.0}, expect=201)
    now = time.time()
    for i in range(5):
        add_host(app, f"web{i}", state="offline", last_ok_at=now - 60)
    assert rnd(app, now)["queued"] == 5
    deliver(app, now)
    assert len(sink.got) == 1
    body = sink.got[0]["body"]
    assert body["title"].startswith("[Kernel] 5 problems: web0: offline, web1: offline")
    assert all(f"web{i} is offline" in body["message"] for i in range(5))
    with components(app).db.reading() as s:
        states = s.scalars(select(AlertNotification.state)).all()
    assert states == ["sent"] * 5


def test_a_target_that_is_down_is_retried_a_bounded_number_of_times(app, admin, sink):
    sink.stop()
    channel(admin, sink)
    admin.post(RULES, {"name": "down", "kind": "offline", "seconds": 10.0}, expect=201)
    now = time.time()
    add_host(app, "web1", state="offline", last_ok_at=now - 60)
    rnd(app, now)
    t = now
    for expected in (1, 2, 3):
        groups = deliver(app, t, attempts=3, retry_after=10.0)
        assert len(groups) == 1
        with components(app).db.reading() as s:
            n = s.scalars(select(AlertNotification)).one()
        assert n.attempts == expected and "Connection error" in n.last_error
        assert deliver(app, t + 1, attempts=3) == []  # not due yet
        t += 10.0 * 2 ** (expected - 1) + 1
    assert n.state == "failed" and n.done_at is not None
    assert deliver(app, t + 10000, attempts=3) == []  # given up: never sent again
    with components(app).db.reading() as s:
        tries = s.scalars(select(AlertDelivery)).all()
    assert [d.ok for d in tries] == [False, False, False] and all(d.error for d in tries)
    (a,) = live(app)
    assert a.state == "open"  # the alert itself is kept
    shown = admin.get(f"/api/v1/alerts/{a.id}")
    assert shown["notifications"][0]["state"] == "failed"
    assert len(shown["notifications"][0]["deliveries"]) == 3


def test_disabling_or_removing_a_rule_closes_its_alerts_quietly(app, admin, sink):
    channel(admin, sink)
    rule = admin.post(RULES, {"name": "down", "kind": "offline", "seconds": 1.0}, expect=201)
    other = admin.post(RULES, {"name": "disk", "kind": "disk", "percent": 50.0}, expect=201)
    now = time.time()
    add_host(app, "web1", state="offline", last_ok_at=now - 60,
             metrics={"disks": [{"mount": "/", "used": 9, "available": 1}]})  # fmt: skip
    add_host(app, "web2", metrics={"disks": [{"mount": "/", "used": 9, "available": 1}]})
    rnd(app, now)
    deliver(app, now)
    sent = len(sink.got)
    admin.patch(f"{RULES}/{rule['id']}", {"enabled": False})
    closed = [a for a in alerts(app) if a.rule_id == rule["id"]]
    assert [(a.state, a.resolution) for a in closed] == [("resolved", "rule disabled")]
    admin.delete(f"{RULES}/{other['id']}")
    gone = [a for a in alerts(app) if a.rule_name == "disk"]
    assert {(a.state, a.resolution, a.rule_id) for a in gone} == {
        ("resolved", "rule removed", None)
    }
    assert rnd(app, now + 1)["changes"] == {}
    deliver(app, now + 1)
    assert len(sink.got) == sent  # nobody is told "resolved" for a problem nobody fixed
    listed = admin.get("/api/v1/alerts?state=resolved")["alerts"]
    assert len(listed) == 2 and admin.get("/api/v1/alerts?state=open")["alerts"] == []


def test_the_list_of_open_and_past_alerts(app, admin):
    admin.post(RULES, {"name": "down", "kind": "offline", "seconds": 1.0, "hold_resolve": 0.0},
               expect=201)  # fmt: skip
    now = time.time()
    a = add_host(app, "web1", state="offline", last_ok_at=now - 60)
    add_host(app, "web2", state="offline", last_ok_at=now - 60)
    rnd(app, now)
    set_status(app, a, state="online")
    rnd(app, now + 1)
    everything = admin.get("/api/v1/alerts")["alerts"]
    assert everything[0]["id"] > everything[1]["id"]  # newest first
    assert sorted((x["server"], x["state"]) for x in everything) == [
        ("web1", "resolved"),
        ("web2", "open"),
    ]
    assert [x["server"] for x in admin.get("/api/v1/alerts?state=open")["alerts"]] == ["web2"]
    assert [x["server"] for x in admin.get("/api/v1/alerts?server=web1")["alerts"]] == ["web1"]
    first = admin.get("/api/v1/alerts?limit=1")["alerts"]
    assert admin.get(f"/api/v1/alerts?before={first[0]['id']}")["alerts"] == everything[1:]
    resolved = next(x for x in everything if x["server"] == "web1")
    one = admin.get(f"/api/v1/alerts/{resolved['id']}")
    assert one["resolution"] == "cleared" and one["resolved_at"] and one["notifications"] == []


def test_two_evaluators_racing_in_threads_on_one_database(app, admin, db_url, monkeypatch):
    """Two evaluators with their own connections, made to read the same state before
    either writes (a barrier after the read): one alert, one message per event."""
    import threading

    from kernel.server.alerts import evaluate as evaluate_module
    from kernel.server.core.db import Database

    admin.post("/api/v1/alerts/channels", {"name": "c", "url": "json://127.0.0.1:9/x"},
               expect=201)  # fmt: skip
    admin.post(RULES, {"name": "down", "kind": "offline", "seconds": 1.0, "hold_resolve": 0.0},
               expect=201)  # fmt: skip
    now = time.time()
    sid = add_host(app, "web1", state="offline", last_ok_at=now - 30)
    barrier = threading.Barrier(2, timeout=30)
    real_read = evaluate_module.read

    def read_then_wait(s, at, gap):
        snap = real_read(s, at, gap)
        barrier.wait()
        return snap

    monkeypatch.setattr(evaluate_module, "read", read_then_wait)
    dbs = [Database(db_url), Database(db_url)]
    try:
        for at in (now, now + 5):
            results: list[dict] = []

            def one(d, at=at, results=results):
                results.append(evaluate(d, {}, now=at, max_gap=GAP))

            threads = [threading.Thread(target=one, args=(d,)) for d in dbs]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            assert len(results) == 2
            assert sum(sum(r["changes"].values()) for r in results) == 1, results
            set_status(app, sid, state="online")
    finally:
        for d in dbs:
            d.dispose()
    with components(app).db.reading() as s:
        assert s.scalar(select(func.count()).select_from(Alert)) == 1
        events = s.scalars(select(AlertNotification.event).order_by(AlertNotification.id)).all()
    assert events == ["open", "resolve"]


def test_resolved_alerts_past_alerts_keep_are_pruned(app, admin):
    admin.post(RULES, {"name": "down", "kind": "offline", "seconds": 1.0, "hold_resolve": 0.0},
               expect=201)  # fmt: skip
    now = time.time()
    a = add_host(app, "web1", state="offline", last_ok_at=now - 30)
    add_host(app, "web2", state="offline", last_ok_at=now - 30)
    rnd(app, now)
    set_status(app, a, state="online")
    rnd(app, now + 1)
    service = components(app).alerts
    service._prune(now + service.keep - 10)  # not old enough yet
    assert len(alerts(app)) == 2
    service._prune(now + service.keep + 10)
    assert [(x.server_name, x.state) for x in alerts(app)] == [("web2", "open")]

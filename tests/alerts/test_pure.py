"""The pure parts of alerts: rule thresholds, conditions, the lifecycle, messages."""

from __future__ import annotations

import pytest

from kernel.exceptions import InvalidInput
from kernel.server.alerts import conditions as cond
from kernel.server.alerts import lifecycle as lc
from kernel.server.alerts import messages
from kernel.server.alerts.evaluate import key_of
from kernel.server.alerts.rules import describe, params_for, seconds

NOW = 1_800_000_000.0


# -- rules --------------------------------------------------------------------------------------
def test_params_take_defaults_and_refuse_other_kinds_thresholds():
    assert params_for("offline", {}) == {"seconds": 60.0}
    assert params_for("load", {"above": 4.0}) == {"above": 4.0, "minutes": 5.0, "metric": "load1"}
    assert params_for("disk", {"percent": 90.0}, base=None)["mounts"] == []
    edited = params_for("disk", {"mounts": ["/var"]}, base={"percent": 80.0, "mounts": []})
    assert edited == {"percent": 80.0, "mounts": ["/var"]}
    with pytest.raises(InvalidInput, match="a disk rule needs 'percent'"):
        params_for("disk", {})
    with pytest.raises(InvalidInput, match="'percent' is not a threshold of offline rules"):
        params_for("offline", {"percent": 5.0})
    with pytest.raises(InvalidInput, match="'kind' must be one of"):
        params_for("weather", {})


def test_rules_in_words():
    assert describe("offline", {"seconds": 90}) == "server not answering for more than 90 s"
    assert "disk use above 90 % on /, /var" == describe(
        "disk", {"percent": 90, "mounts": ["/", "/var"]}
    )
    assert describe("load", {"above": 4, "minutes": 10, "metric": "load5"}) == (
        "load5 above 4 for 10 min"
    )
    assert [seconds(v) for v in (5, 119, 150, 3600, 7300, 90000, 200000)] == [
        "5 s", "119 s", "2 min 30 s", "60 min", "2 h 1 min", "25 h", "2 d 7 h",
    ]  # fmt: skip


# -- conditions ---------------------------------------------------------------------------------
def host(i, **kw):
    return cond.Host(id=i, name=f"h{i}", **kw)


def test_scope_by_tags():
    assert cond.in_scope(["web"], [])
    assert cond.in_scope(["web", "db"], ["db"])
    assert not cond.in_scope([], ["db"])


def test_offline_counts_from_the_last_good_probe():
    v = cond.offline([host(1, state="offline", last_ok_at=NOW - 30, last_error="refused"),
                      host(2, state="online"), host(3, state="unknown")], 10, NOW)  # fmt: skip
    assert [(p.server_id, p.subject, p.since) for p in v.problems] == [(1, "offline", NOW - 30)]
    assert "not answering for 30 s: refused" in v.problems[0].summary


def u(active, sub="", installed=True):
    return {"installed": installed, "active_state": active, "sub_state": sub,
            "active": active == "active"}  # fmt: skip


def test_services_failed_or_inactive_where_it_was_active():
    units = {"a.service": "a", "b.service": "b", "c.service": "c", "d.service": "d"}
    h = host(1, state="online", units={
        "a.service": u("failed"), "b.service": u("inactive"), "c.service": u("inactive"),
        "d.service": u("activating", "auto-restart"),
    })  # fmt: skip
    v = cond.services([h], units, seen_active={(1, "b.service"), (1, "d.service")})
    assert sorted(p.subject for p in v.problems) == ["service a", "service b", "service d"]
    only = cond.services([h], units, {(1, "b.service")}, only=["b"])
    assert [p.subject for p in only.problems] == ["service b"]
    # a never-started unit is not a problem; an offline host's units cannot be judged
    off = cond.services([host(2, state="offline", units={"a.service": u("failed")})], units, set())
    assert off.problems == () and off.unknown == {2}
    active, gone = cond.active_units([host(3, state="online", units={
        "a.service": u("active"), "b.service": u("inactive", installed=False)})])  # fmt: skip
    assert active == {(3, "a.service")} and gone == {(3, "b.service")}


def test_disks_above_percent_per_mount():
    disks = [
        {"mount": "/", "used": 95, "available": 5, "total": 100},
        {"mount": "/var", "used": 50, "available": 50, "total": 100},
        {"mount": "/bad", "used": "x", "available": 1},
        {"mount": "/empty", "used": 0, "available": 0},
    ]
    v = cond.disks([host(1, state="online", metrics={"disks": disks})], 90)
    assert [(p.subject, p.value) for p in v.problems] == [("disk /", 95.0)]
    assert (
        cond.disks([host(1, state="online", metrics={"disks": disks})], 90, ["/var"]).problems == ()
    )
    assert cond.disks([host(1, state="offline", metrics={"disks": disks})], 90).unknown == {1}


def test_sustained_above():
    pts = [(NOW - 300 + 30 * i, 5.0) for i in range(11)]  # every 30 s for 5 minutes, all 5.0
    assert cond.sustained_above(pts, 4, 240, NOW, 90) == (True, NOW - 300)
    assert cond.sustained_above(pts, 4, 400, NOW, 90)[0] is False  # not long enough yet
    dipped = [*pts[:5], (pts[5][0], 1.0), *pts[6:]]
    held, start = cond.sustained_above(dipped, 4, 240, NOW, 90)
    assert held is False and start == pts[6][0]
    gap = pts[:3] + pts[8:]  # the host did not answer for a while: the run starts again
    assert cond.sustained_above(gap, 4, 240, NOW, 90)[1] == pts[8][0]
    assert cond.sustained_above(pts[:-4], 4, 60, NOW, 90) == (None, None)  # nothing recent
    assert cond.sustained_above([], 4, 60, NOW, 90) == (None, None)
    assert cond.sustained_above([(NOW, 3.0)], 4, 60, NOW, 90) == (False, None)


def run(job_id, state, *, kind="command", server=1, at=NOW, parent=None, meta=None, title="t"):
    return cond.JobRun(job_id=job_id, kind=kind, title=title, meta=meta or {}, parent_id=parent,
                       finished_at=at, server_id=server, server_name=f"h{server}", state=state,
                       exit_code=1 if state == "failed" else 0)  # fmt: skip


def test_job_identity():
    parents = {3: 2, 2: 1, 1: None}
    assert cond.job_identity(run(3, "ok", parent=2), parents) == "job 1"
    assert cond.job_identity(run(9, "ok", parent=7), {}) == "job 7"  # parent beyond the window
    assert cond.job_identity(run(4, "ok", kind="schedule", meta={"schedule_id": 5}), {}) == (
        "schedule 5"
    )
    svc = run(5, "ok", kind="service", meta={"service": "sums", "op": "deploy"})
    assert cond.job_identity(svc, {}) == "service sums deploy"
    assert cond.job_identity(run(6, "ok", kind="init", meta={"script": "10-a.sh"}), {}) == (
        "init 10-a.sh"
    )


def test_jobs_latest_run_per_server_and_identity():
    hosts = {1: host(1, tags=("web",)), 2: host(2)}
    sched = {"schedule_id": 5}
    runs = [
        run(10, "failed", kind="schedule", meta=sched, server=1, at=NOW - 100),
        run(11, "ok", kind="schedule", meta=sched, server=1, at=NOW - 50),  # fixed on h1
        run(11, "timed_out", kind="schedule", meta=sched, server=2, at=NOW - 50),
        run(12, "failed", server=1, at=NOW - 10),
        run(13, "cancelled", server=1, at=NOW - 5, parent=12),  # says nothing
    ]
    v = cond.jobs(runs, {13: 12, 12: None}, hosts, tags=())
    assert sorted((p.server_id, p.subject) for p in v.problems) == [
        (1, "job 12"),
        (2, "schedule 5"),
    ]
    assert "timed out" in next(p.summary for p in v.problems if p.server_id == 2)
    only_sched = cond.jobs(runs, {}, hosts, tags=(), kinds=["schedule"])
    assert [p.subject for p in only_sched.problems] == ["schedule 5"]
    web = cond.jobs(runs, {}, hosts, tags=["web"])
    assert [p.server_id for p in web.problems] == [1]
    fixed = cond.jobs([*runs, run(14, "ok", server=1, at=NOW, parent=12)], {14: 12}, hosts, ())
    assert [p.subject for p in fixed.problems] == ["schedule 5"]


# -- lifecycle ----------------------------------------------------------------------------------
def cur(state, since=NOW - 10, clear=None):
    return lc.Current(1, state, since, clear)


def test_lifecycle_steps():
    step = lc.step
    assert step(None, False, NOW) == lc.NOTHING
    assert step(None, True, NOW) == lc.CREATE_OPEN
    assert step(None, True, NOW, hold_open=5) == lc.CREATE_PENDING
    assert step(None, True, NOW, since=NOW - 6, hold_open=5) == lc.CREATE_OPEN
    assert step(cur("pending", NOW - 3), True, NOW, hold_open=5) == lc.UPDATE
    assert step(cur("pending", NOW - 6), True, NOW, hold_open=5) == lc.OPEN
    assert step(cur("pending"), False, NOW, hold_open=5) == lc.DROP
    assert step(cur("open"), True, NOW) == lc.UPDATE
    assert step(cur("open"), False, NOW, hold_resolve=0) == lc.RESOLVE
    assert step(cur("open"), False, NOW, hold_resolve=30) == lc.RESOLVING
    assert step(cur("resolving", clear=NOW - 10), True, NOW, hold_resolve=30) == lc.REOPEN
    assert step(cur("resolving", clear=NOW - 10), False, NOW, hold_resolve=30) == lc.NOTHING
    assert step(cur("resolving", clear=NOW - 31), False, NOW, hold_resolve=30) == lc.RESOLVE


def test_flapping_tells_once_each_way():
    """A problem that comes and goes every 10 s for 5 minutes, with 30 s holds: one opening,
    and one resolving after it settles."""
    current, told, t = None, [], NOW
    for i in range(60):
        present = ((i < 30) and (i // 2) % 2 == 0) or 30 <= i < 32
        action = lc.step(current, present, t, hold_open=0, hold_resolve=30)
        if action in lc.TELLS:
            told.append(action)
        if action in (lc.CREATE_OPEN, lc.OPEN, lc.REOPEN, lc.UPDATE):
            current = lc.Current(1, "open", current.since if current else t)
        elif action == lc.RESOLVING:
            current = lc.Current(1, "resolving", current.since, t)
        elif action == lc.RESOLVE:
            current = None
        t += 5
    assert told == [lc.CREATE_OPEN, lc.RESOLVE]


def test_key_names_rule_server_and_subject():
    assert key_of(1, 2, "disk /") != key_of(1, 2, "disk /var") != key_of(1, None, "disk /")
    assert len(key_of(1, 2, "x" * 1000)) == 64


# -- messages -----------------------------------------------------------------------------------
def test_messages():
    facts = messages.AlertFacts(
        7,
        "web down",
        "server not answering for more than 60 s",
        "web1",
        "offline",
        "web1 is offline",
        NOW - 125,
        "http://k/a/7",
    )
    m = messages.opened(facts)
    assert m.title == "[Kernel] PROBLEM web1: offline"
    assert "web1 is offline" in m.body and "http://k/a/7" in m.body and "UTC" in m.body
    r = messages.resolved(facts, NOW)
    assert (
        r.title == "[Kernel] RESOLVED web1: offline"
        and "after 2 min 5 s. It was: web1 is offline" in r.body
    )
    d = messages.digest("open", [m, m, m, m])
    assert d.title.startswith("[Kernel] 4 problems: web1: offline") and "and 1 more" in d.title
    assert messages.digest("open", [m]) is m
    long = messages.opened(messages.AlertFacts(1, "r", "c", "s", "x" * 500, "s", NOW))
    assert len(long.title) <= messages.TITLE_MAX

"""The poller against real agents on light test hosts: facts, metrics, health; a cut-off host
goes offline within two intervals and comes back; refresh answers at once; history pruning."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from kernel.server.components import components
from kernel.server.models.status import HostStatus, MetricSample
from kernel.server.status import store
from support.api import Api, make_token
from support.procs import wait_for

from .conftest import add_server, close_app, make_app

INTERVAL = 2.0


@pytest.fixture(scope="module")
def bed(light_hosts):
    return light_hosts(3)


@pytest.fixture(scope="module")
def polled(bed, tmp_path_factory):
    """An app whose poller probes the bed every second (its runner started, as in serve)."""
    data = tmp_path_factory.mktemp("status") / "data"
    app = make_app(
        data,
        INSTALL_EXAMPLES=True,
        STATUS_INTERVAL=INTERVAL,
        STATUS_OFFLINE_AFTER=2,
        STATUS_PROBE_TIMEOUT=5.0,  # the deadline is 0.4 interval
        AGENT_CONNECT_TIMEOUT=0.4,
    )
    ids = {h.name: add_server(app, h.name, h.agent_url, h.key) for h in bed.hosts}
    components(app).start()
    assert components(app).poller.running
    api = Api(app.test_client(), make_token(app, "op", "operator"))
    yield app, api, ids
    close_app(app)


def states(api):
    return {h["server"]: h for h in api.get("/api/v1/status")["hosts"]}


def test_hosts_come_online_with_facts_and_metrics(polled, bed):
    _app, api, ids = polled
    wait_for(lambda: all(h["state"] == "online" for h in states(api).values()), 15)
    h = bed.hosts[0]
    one = api.get(f"/api/v1/servers/{ids[h.name]}/status")
    facts = one["facts"]
    assert facts["arch"] and facts["kernel"] and facts["cpu_count"] >= 1
    assert facts["os_id"] and facts["hostname"]
    m = one["metrics"]
    assert m["mem_total"] > 0 and m["load1"] is not None and m["uptime"] > 0
    assert isinstance(m["disks"], list)
    assert one["failures"] == 0 and one["probed_at"] and one["duration"] < 5
    assert "units" in one  # empty here: light hosts share this machine, no systemd
    wait_for(lambda: len(api.get(f"/api/v1/servers/{ids[h.name]}/metrics")["times"]) >= 2, 10)
    series = api.get(f"/api/v1/servers/{ids[h.name]}/metrics?names=mem_used,load1")
    assert set(series["series"]) == {"mem_used", "load1"}
    assert len(series["series"]["mem_used"]) == len(series["times"]) >= 2
    assert all(c == 1 for c in series["counts"])
    services = api.get(f"/api/v1/servers/{ids[h.name]}/services")
    assert {s["service"] for s in services["services"]} == {"hello-web", "sums"}
    assert services["health"] == "online"


def test_cut_host_goes_offline_within_two_intervals_and_back(polled, bed):
    _app, api, _ids = polled
    wait_for(lambda: all(h["state"] == "online" for h in states(api).values()), 15)
    victim = bed.hosts[1]
    victim.cut()
    try:
        t0 = time.monotonic()
        # two failed probes, each at most one interval apart plus the connect timeout
        wait_for(lambda: states(api)[victim.name]["state"] == "offline", 2 * INTERVAL + 3)
        took = time.monotonic() - t0
        st = states(api)[victim.name]
        assert st["last_error"] and st["failures"] >= 2 and st["server_state"] == "offline"
        others = [h for n, h in states(api).items() if n != victim.name]
        assert all(h["state"] == "online" for h in others)
        assert took <= 2 * INTERVAL + 0.3, took
    finally:
        victim.restore()
    wait_for(lambda: states(api)[victim.name]["state"] == "online", 2 * INTERVAL + 5)
    st = states(api)[victim.name]
    assert st["server_state"] == "online" and st["last_error"]  # kept, with its time
    assert st["last_error_at"] < st["last_ok_at"]


def test_refresh_answers_at_once_and_probes(polled, bed):
    _app, api, ids = polled
    h = bed.hosts[2]
    before = api.get(f"/api/v1/servers/{ids[h.name]}/status")["probed_at"]
    h.freeze()  # a probe of this host now hangs: the refresh must not wait for it
    try:
        t0 = time.monotonic()
        resp = api.post("/api/v1/status/refresh", expect=202)
        api.post(f"/api/v1/servers/{ids[h.name]}/status/refresh", expect=202)
        api.post("/api/v1/status/refresh", {"servers": [bed.hosts[0].name]}, expect=202)
        assert time.monotonic() - t0 < 1.0 and resp["refreshing"] is True
        t0 = time.monotonic()
        api.get("/api/v1/status")  # served from the database, not waiting on the frozen host
        assert time.monotonic() - t0 < 1.0
    finally:
        h.thaw()
    wait_for(lambda: api.get(f"/api/v1/servers/{ids[h.name]}/status")["probed_at"] != before, 10)


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/servers/{id}/metrics?since=abc",
        "/api/v1/servers/{id}/metrics?since=nan",
        "/api/v1/servers/{id}/metrics?until=1e99",
        "/api/v1/servers/{id}/metrics?since=100&until=50",
        "/api/v1/servers/{id}/metrics?names=bogus",
    ],
)
def test_metrics_garbage_is_400(polled, bed, url):
    _app, api, ids = polled
    api.get(url.format(id=ids[bed.hosts[0].name]), expect=400)


def test_unknown_server_is_404(polled):
    _app, api, _ids = polled
    for url in ("status", "services", "metrics"):
        api.get(f"/api/v1/servers/999999/{url}", expect=404)
    api.post("/api/v1/servers/999999/status/refresh", expect=404)
    api.post("/api/v1/status/refresh", {"servers": ["nope"]}, expect=400)
    api.post("/api/v1/status/refresh", {"servers": "x"}, expect=400)
    api.post("/api/v1/status/refresh", {"what": 1}, expect=400)


def test_prune_compacts_history(tmp_path: Path, db_url):
    app = make_app(tmp_path / "data", DATABASE_URL=db_url)
    try:
        sid = add_server(app, "old", "http://127.0.0.1:9", "ab" * 32)
        now = 1_800_000_000.0
        day = 86400
        with components(app).db.session() as s:
            for i in range(60):  # 30 s samples 2 days ago: 30 minutes = 6 buckets
                t = now - 2 * day + i * 30
                s.add(MetricSample(server_id=sid, t=t, count=1, values={"load1": float(i)}))
            for i in range(10):  # recent: kept as they are
                s.add(MetricSample(server_id=sid, t=now - 60 * i, count=1, values={"load1": 1.0}))
            s.add(MetricSample(server_id=sid, t=now - 8 * day, count=1, values={"load1": 9.0}))
        poller = components(app).poller
        removed = store.prune(poller.db, now, poller.retention)
        with components(app).db.session() as s:
            rows = s.query(MetricSample).order_by(MetricSample.t).all()
            old = [r for r in rows if r.t < now - day]
            assert [r.count for r in old] == [10] * 6 or sum(r.count for r in old) == 60
            assert all(r.t % 300 == 0 for r in old)
            assert abs(sum(r.values["load1"] * r.count for r in old) - sum(range(60))) < 1e-6
            assert len([r for r in rows if r.t >= now - day]) == 10
            assert not [r for r in rows if r.t < now - 7 * day]
        assert removed == 60 - len(old) + 1
        assert store.prune(poller.db, now, poller.retention) == 0  # idempotent
        with components(app).db.session() as s:
            assert s.query(HostStatus).count() == 0
    finally:
        close_app(app)


def test_a_server_that_joins_is_probed_at_once(bed, tmp_path):
    # Not at the next round: a newly added server's status is known within moments.
    app = make_app(tmp_path / "data", STATUS_INTERVAL=3600.0, AGENT_NETWORKS=None)
    try:
        components(app).start()
        poller = components(app).poller
        wait_for(lambda: poller.last_round, 10)  # the (empty) first round is over
        admin = Api(app.test_client(), make_token(app, "adm", "admin"))
        h = bed.hosts[0]
        body = {"name": h.name, "agent_url": h.agent_url, "agent_key": h.key}
        sid = admin.post("/api/v1/servers", body, expect=201)["server"]["id"]
        status = wait_for(
            lambda: (st := admin.get(f"/api/v1/servers/{sid}/status"))["state"] == "online" and st,
            5,
        )
        assert status["facts"]["hostname"]
    finally:
        close_app(app)


def test_frozen_hosts_do_not_hold_up_a_rounds_live_ones(light_hosts, tmp_path):
    # Six frozen hosts and a limit of 4 in flight: their probes wait on the network until the
    # deadline, but give their slots back after STALL_AFTER, so the live hosts are probed at
    # once instead of after the deadline.
    from kernel.server.status import poller as poller_mod
    from kernel.server.status.probelimit import ProbeLimit

    bed = light_hosts(9)
    frozen, live = bed.hosts[:6], bed.hosts[6:]  # frozen first: they take the slots first
    app = make_app(tmp_path / "data", STATUS_INTERVAL=3600.0, STATUS_PROBE_TIMEOUT=8.0)
    try:
        ids = {h.name: add_server(app, h.name, h.agent_url, h.key) for h in bed.hosts}
        components(app).start()
        poller = components(app).poller
        wait_for(lambda: poller.last_round, 20)
        poller.limit = ProbeLimit(ceiling=4, floor=4, start=4)
        for h in frozen:
            h.freeze()
        try:
            t0 = time.time()
            summary = poller.poll_now(list(ids.values()))
        finally:
            for h in frozen:
                h.thaw()
        assert summary["failed"] == len(frozen) and summary["ok"] == len(live)
        api = Api(app.test_client(), make_token(app, "v", "viewer"))
        for h in live:
            st = api.get(f"/api/v1/servers/{ids[h.name]}/status")
            assert st["state"] == "online"
            # probed within a couple of stall periods of the round's start, not after 8 s
            probed = st["probed_at"]
            from datetime import datetime

            started = datetime.fromisoformat(probed.replace("Z", "+00:00")).timestamp()
            assert started - t0 < 2 * poller_mod.STALL_AFTER + 1.0, (h.name, started - t0)
    finally:
        close_app(app)

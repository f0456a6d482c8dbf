"""End to end with real hosts, a real poller and the alerts service running as in
`kernel-server`: a light host frozen by the testbed raises "offline" within its rule's time
and "resolved" after the thaw, told to a real HTTP sink and a real SMTP server; on a full
host (systemd), a service deployed through the API and stopped by hand raises "service
inactive", and starting it again resolves it."""

from __future__ import annotations

import shutil
import time

import pytest

from kernel.server.app import create_app
from kernel.server.components import components
from kernel.server.core.datadir import EXAMPLES_DIR
from kernel.server.core.db import utcnow
from kernel.server.models.servers import Server
from support.api import Api, make_token, wait_job
from support.procs import wait_for
from support.receivers import Mailbox, Sink

pytestmark = pytest.mark.slow
STATUS_INTERVAL = 1.0
ALERTS_INTERVAL = 0.5


def make_app(data, **extra):
    return create_app(
        {
            "TESTING": True,
            "DATA_DIR": str(data),
            "SECRET_KEY": "alerts-e2e",
            "AGENT_NETWORKS": None,
            "RUN_START_TIMEOUT": 3.0,
            "AGENT_CONNECT_TIMEOUT": 0.5,
            "STATUS_POLLER": True,
            "STATUS_INTERVAL": STATUS_INTERVAL,
            "STATUS_OFFLINE_AFTER": 2,
            "STATUS_PROBE_TIMEOUT": 5.0,
            "ALERTS": True,
            "ALERTS_INTERVAL": ALERTS_INTERVAL,
            "ALERTS_SEND_TIMEOUT": 3.0,
            "ALERTS_RETRY_AFTER": 0.5,
            **extra,
        }
    )


def join(app, hosts):
    with components(app).db.session() as s:
        for h in hosts:
            s.add(Server(name=h.name, agent_url=h.agent_url, agent_key=h.key, state="online",
                         tags=["bed"], facts={}, description="", last_seen=utcnow()))  # fmt: skip


def online(api, names):
    hosts = {h["server"]: h["state"] for h in api.get("/api/v1/status")["hosts"]}
    return all(hosts.get(n) == "online" for n in names)


@pytest.fixture(scope="module")
def light(light_hosts):
    return light_hosts(2)


def test_a_frozen_host_raises_offline_in_time_and_resolved_after_the_thaw(light, tmp_path):
    sink, mailbox = Sink(), Mailbox()
    app = make_app(tmp_path / "data")
    try:
        join(app, light.hosts)
        api = Api(app.test_client(), make_token(app, "admin1", "admin"))
        for name, url in (("sink", sink.url()), ("mail", mailbox.url())):
            api.post("/api/v1/alerts/channels", {"name": name, "url": url}, expect=201)
        n = 3.0
        rule = {"name": "bed down", "kind": "offline", "seconds": n, "tags": ["bed"],
                "hold_resolve": 2.0}  # fmt: skip
        api.post("/api/v1/alerts/rules", rule, expect=201)
        components(app).start()
        names = [h.name for h in light.hosts]
        wait_for(lambda: online(api, names), 20)
        victim = light.hosts[0]
        victim.freeze()
        t0 = time.monotonic()
        try:
            wait_for(lambda: len(sink.got) >= 1, n + 4 * STATUS_INTERVAL + 4 * ALERTS_INTERVAL + 5)
            opened_after = time.monotonic() - t0
            assert sink.titles() == [f"[Kernel] PROBLEM {victim.name}: offline"]
            (alert,) = api.get("/api/v1/alerts?state=open")["alerts"]
            assert alert["server"] == victim.name and alert["kind"] == "offline"
            # "more than N seconds" counts from the last good probe, before the freeze
            assert opened_after >= n - STATUS_INTERVAL - 0.1, opened_after
        finally:
            victim.thaw()
        t1 = time.monotonic()
        wait_for(lambda: len(sink.got) >= 2, 2.0 + 4 * STATUS_INTERVAL + 4 * ALERTS_INTERVAL + 5)
        resolved_after = time.monotonic() - t1
        assert sink.titles()[1] == f"[Kernel] RESOLVED {victim.name}: offline"
        assert resolved_after >= 2.0  # the hold before resolving
        wait_for(lambda: len(mailbox.got) >= 2, 10)
        subjects = [c for _f, _t, c in mailbox.got]
        assert "PROBLEM" in subjects[0] and "RESOLVED" in subjects[1]
        time.sleep(3 * ALERTS_INTERVAL)
        assert len(sink.got) == 2 and len(mailbox.got) == 2  # nothing else, nothing twice
        (alert,) = api.get("/api/v1/alerts")["alerts"]
        assert alert["state"] == "resolved" and alert["resolution"] == "cleared"
        shown = api.get(f"/api/v1/alerts/{alert['id']}")
        events = sorted((x["channel"], x["event"], x["state"]) for x in shown["notifications"])
        assert events == [("mail", "open", "sent"), ("mail", "resolve", "sent"),
                          ("sink", "open", "sent"), ("sink", "resolve", "sent")]  # fmt: skip
        print(f"\nopened {opened_after:.1f} s after the freeze (rule: {n:g} s); "
              f"resolved {resolved_after:.1f} s after the thaw (hold 2 s)")  # fmt: skip
    finally:
        components(app).close()
        sink.stop()
        mailbox.stop()


@pytest.fixture(scope="module")
def full(full_hosts):
    return full_hosts(1)


def test_a_service_stopped_by_hand_raises_service_inactive(full, tmp_path):
    data = tmp_path / "data"
    (data / "service").mkdir(parents=True)
    shutil.copytree(EXAMPLES_DIR / "service" / "hello-web", data / "service" / "hello-web")
    sink = Sink()
    app = make_app(data)
    try:
        join(app, full.hosts)
        h = full.hosts[0]
        api = Api(app.test_client(), make_token(app, "admin1", "admin"))
        api.post("/api/v1/alerts/channels", {"name": "sink", "url": sink.url()}, expect=201)
        api.post("/api/v1/alerts/rules", {"name": "services", "kind": "service",
                                          "services": ["hello-web"], "hold_resolve": 1.0},
                 expect=201)  # fmt: skip
        components(app).start()
        wait_for(lambda: online(api, [h.name]), 30)
        job = api.post("/api/v1/services/hello-web/deploy",
                       {"targets": {"servers": [h.name]}}, expect=201)  # fmt: skip
        runs = wait_job(api, job["id"], 120)["runs"]
        assert runs[0]["state"] == "ok", runs

        def unit_state():
            st = api.get(f"/api/v1/servers/{runs[0]['server_id']}/services")
            return {s["service"]: s for s in st["services"]}["hello-web"]

        wait_for(lambda: unit_state()["active"], 20)
        time.sleep(3 * ALERTS_INTERVAL)  # the evaluator has seen it active
        assert sink.got == []
        assert h.run("systemctl stop hello-web").returncode == 0
        wait_for(lambda: len(sink.got) >= 1, 4 * STATUS_INTERVAL + 4 * ALERTS_INTERVAL + 5)
        assert sink.titles() == [f"[Kernel] PROBLEM {h.name}: service hello-web"]
        assert "hello-web (hello-web.service) is inactive" in sink.got[0]["body"]["message"]
        assert h.run("systemctl start hello-web").returncode == 0
        wait_for(lambda: len(sink.got) >= 2, 1.0 + 4 * STATUS_INTERVAL + 4 * ALERTS_INTERVAL + 5)
        assert sink.titles()[1] == f"[Kernel] RESOLVED {h.name}: service hello-web"
        job = api.post("/api/v1/services/hello-web/remove",
                       {"targets": {"servers": [h.name]}}, expect=201)  # fmt: skip
        assert wait_job(api, job["id"], 120)["runs"][0]["state"] == "ok"
        time.sleep(3 * STATUS_INTERVAL)
        assert len(sink.got) == 2  # removing the service is not a problem
    finally:
        components(app).close()
        sink.stop()

"""Live job events (SSE): the bus, resuming with Last-Event-ID, and live delivery through the
real server process (waitress streams each event as it happens)."""

from __future__ import annotations

import threading

import httpx

from kernel.server.core.events import EventBus
from support.api import wait_job
from support.sse import parse_sse

from .conftest import add_agent_server


def test_bus_sequence_wait_and_drop():
    bus = EventBus()
    bus.publish(1, "run", run={"id": "a"})
    bus.publish(1, "output", data="x")
    assert [e.seq for e in bus.after(1, 0, 0)] == [1, 2]
    assert bus.after(1, 2, 0) == []
    got = []
    t = threading.Thread(target=lambda: got.extend(bus.after(1, 2, 5)))
    t.start()
    bus.publish(1, "end", state="finished")
    t.join(5)
    assert [e.type for e in got] == ["end"]
    assert bus.parse_id(f"{bus.epoch}-2") == 2
    assert bus.parse_id("other-2") is None and bus.parse_id("garbage") is None
    from kernel.server.core import events

    events.MAX_EVENTS_PER_JOB, old = 2, events.MAX_EVENTS_PER_JOB
    try:
        for i in range(5):
            bus.publish(2, "output", data=str(i))
        assert bus.after(2, 0, 0) is None  # dropped: the reader must take a snapshot
        assert [e.data["data"] for e in bus.after(2, 3, 0)] == ["3", "4"]
    finally:
        events.MAX_EVENTS_PER_JOB = old


def test_event_stream_snapshot_then_live_then_resume(app, admin, runner, agents):
    (a,) = agents(1)
    add_agent_server(admin, a, "alpha")
    job = admin.post(
        "/api/v1/jobs",
        {"cmd": "echo one; sleep 0.3; echo two", "targets": {"all": True}},
        expect=201,
    )
    resp = admin.call("GET", f"/api/v1/jobs/{job['id']}/events")
    assert resp.status_code == 200 and resp.mimetype == "text/event-stream"
    events = parse_sse(resp.get_data(as_text=True))
    types = [e["type"] for e in events]
    assert types[0] == "snapshot" and types[-1] == "end"
    # Output before the snapshot is in it; the rest follows as output events.
    out = events[0]["job"]["runs"][0]["stdout"]
    out += "".join(e["data"] for e in events if e["type"] == "output")
    assert out == "one\ntwo\n"
    assert events[-1]["summary"]["ok"] == 1
    # Resuming after the first live event replays only what came after it. (Under heavy
    # load the job may have ended before the stream opened: then there is nothing to resume.)
    if len(events) > 2:
        second = events[1]["id"]
        resumed = admin.call(
            "GET", f"/api/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": second}
        )
        again = parse_sse(resumed.get_data(as_text=True))
        assert [e["id"] for e in again] == [e["id"] for e in events[2:]]
    # A foreign or stale id gets a snapshot (and, the job being over, the end).
    stale = admin.call("GET", f"/api/v1/jobs/{job['id']}/events?last_event_id=zzz-1")
    assert [e["type"] for e in parse_sse(stale.get_data(as_text=True))] == ["snapshot", "end"]
    wait_job(admin, job["id"])


def test_events_arrive_live_through_the_real_server(server_proc, agents):
    (a,) = agents(1)
    server_proc.start()
    server_proc.login()
    with server_proc.api() as api:
        r = api.post(
            "/api/v1/servers", json={"name": "alpha", "agent_url": a.url, "agent_key": a.key}
        )
        assert r.status_code == 201
        # The pause before the first line gives the stream time to open: a job whose runs go
        # straight to the runner may otherwise print it before the snapshot is taken (then it
        # is in the snapshot, correctly, but this test wants to see it arrive live).
        cmd = "sleep 0.7; echo first; sleep 1.5; echo second"
        job_id = api.post("/api/v1/jobs", json={"cmd": cmd, "targets": {"all": True}}).json()["id"]
        seen = []
        with api.stream("GET", f"/api/v1/jobs/{job_id}/events", timeout=30) as resp:
            assert resp.headers["content-type"].startswith("text/event-stream")
            buf = ""
            for chunk in resp.iter_text():
                buf += chunk
                while "\n\n" in buf:
                    block, buf = buf.split("\n\n", 1)
                    for ev in parse_sse(block + "\n\n"):
                        seen.append(ev)
                        if ev["type"] == "output" and ev["data"] == "first\n":
                            # Delivered while the command is still running on the agent.
                            state = api.get(f"/api/v1/jobs/{job_id}").json()["state"]
                            assert state == "running"
                            seen.append({"type": "checked-live"})
                if seen and seen[-1]["type"] == "end":
                    break
        types = [e["type"] for e in seen]
        assert "checked-live" in types and types[-1] == "end"
        assert httpx.get(server_proc.url + "/healthz").status_code == 200


def test_open_streams_are_capped(app, admin, runner, agents):
    app.config["SSE_MAX_STREAMS"] = 1
    (a,) = agents(1)
    add_agent_server(admin, a, "alpha")
    job = admin.post("/api/v1/jobs", {"cmd": "sleep 30", "targets": {"all": True}}, expect=201)
    url = f"/api/v1/jobs/{job['id']}/events"
    first = admin.client.get(url, headers=admin.headers, buffered=False)
    assert first.status_code == 200
    second = admin.call("GET", url)
    assert second.status_code == 429 and second.get_json()["error"] == "rate_limited"
    first.close()  # the server closes the response: the slot is free again
    third = admin.client.get(url, headers=admin.headers, buffered=False)
    assert third.status_code == 200
    third.close()
    admin.post(f"/api/v1/jobs/{job['id']}/cancel")
    wait_job(admin, job["id"], timeout=20)

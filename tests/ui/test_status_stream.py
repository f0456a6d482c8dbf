"""GET /api/v1/status/events against a real server and agents: a snapshot of every host,
then a ``host`` event when a probe changes one; filters, resumption, the bound on open
streams, and bad input. Also: when a service operation's run ends, its host is probed at once
(the interval here is 10 minutes, so only that probe can bring the change)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from .conftest import AgentProc, ServerProc, loopback_ips, write_catalogue


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProc, dict]]:
    root = tmp_path_factory.mktemp("ui-status")
    write_catalogue(root / "data")
    server = ServerProc(
        root / "data",
        KERNEL_STATUS_INTERVAL="600",
        KERNEL_STATUS_OFFLINE_AFTER="1",
        KERNEL_SSE_MAX_STREAMS="3",
    ).start()
    agents = {}
    try:
        for ip, name in zip(loopback_ips(3)[1:], ("s1", "s2"), strict=True):
            agents[name] = AgentProc(ip, root / name).start()
            agents[name].id = server.add_agent(name, agents[name])["id"]
        yield server, agents
    finally:
        for a in agents.values():
            a.stop()
        server.stop()


def events(client: httpx.Client, path: str, until: float, **kw: Any) -> Iterator[dict]:
    """Parsed events of one stream (type and data), until ``until`` (monotonic)."""
    with client.stream(
        "GET", path, timeout=httpx.Timeout(5, read=until - time.monotonic()), **kw
    ) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        event: dict[str, Any] = {}
        for line in r.iter_lines():
            if line.startswith("id: "):
                event["id"] = line[4:]
            elif line.startswith("event: "):
                event["type"] = line[7:]
            elif line.startswith("data: "):
                event["data"] = json.loads(line[6:])
            elif line == "" and "type" in event:
                yield event
                event = {}
            if time.monotonic() > until:
                return


def test_snapshot_then_changes(setup):
    server, agents = setup
    with server.api() as c:
        stream = events(c, "/api/v1/status/events", time.monotonic() + 30)
        first = next(stream)
        assert first["type"] == "snapshot"
        hosts = {h["server"]: h for h in first["data"]["hosts"]}
        assert set(hosts) == {"s1", "s2"}
        assert set(hosts["s1"]) >= {"server_id", "state", "units", "figures", "health"}
        assert hosts["s1"]["units"] == {
            "kernel-ui-test-echoer.service": "missing",
            "kernel-ui-test-xss.service": "missing",
        }
        agents["s2"].stop()
        assert c.post("/api/v1/status/refresh", json={"servers": ["s2"]}).status_code == 202
        for ev in stream:
            if ev["type"] == "host" and ev["data"]["host"]["server"] == "s2":
                if ev["data"]["host"]["state"] == "offline":
                    assert "state" in ev["data"]["changed"]
                    break
        else:
            raise AssertionError("no offline event for s2")
        # Resuming from that event's id: the stream continues, no snapshot.
        agents["s2"].start()
        assert c.post("/api/v1/status/refresh", json={"servers": ["s2"]}).status_code == 202
        resumed = events(
            c, "/api/v1/status/events?servers=" + str(agents["s2"].id), time.monotonic() + 20,
            headers={"Last-Event-ID": ev["id"]},
        )  # fmt: skip
        nxt = next(resumed)
        assert nxt["type"] == "host" and nxt["data"]["host"]["state"] == "online"
        resumed.close()
        stream.close()


def test_a_service_operation_probes_its_host_when_it_ends(setup):
    server, agents = setup
    with server.api() as c:
        stream = events(c, "/api/v1/status/events?servers=" + str(agents["s1"].id),
                        time.monotonic() + 30)  # fmt: skip
        assert next(stream)["type"] == "snapshot"
        r = c.post("/api/v1/services/echoer/status", json={"targets": {"servers": ["s1"]}})
        assert r.status_code == 201, r.text
        job = server.wait_job(r.json()["id"])
        t_end = time.monotonic()
        for ev in stream:  # the probe after the run: new figures at least (uptime moved)
            if ev["type"] == "host":
                assert ev["data"]["host"]["server"] == "s1"
                break
        stream.close()
        assert time.monotonic() - t_end < 10, job


@pytest.mark.parametrize("bad", ["x", "1,,x", "0", "-1", "99999999999", "1" * 30000])
def test_bad_server_lists_are_400(setup, bad):
    server, _ = setup
    with server.api() as c:
        r = c.get("/api/v1/status/events", params={"servers": bad})
        assert r.status_code == 400 and r.json()["error"] == "bad_request"


def test_open_streams_are_bounded(setup):
    server, _ = setup
    with server.api() as c:
        opened = []
        try:
            deadline = time.monotonic() + 20  # earlier tests' streams end at a keep-alive
            while len(opened) < 3:
                s = c.stream("GET", "/api/v1/status/events", timeout=10)
                if s.__enter__().status_code == 200:
                    opened.append(s)
                    continue
                s.__exit__(None, None, None)
                assert time.monotonic() < deadline, "earlier streams were never released"
                time.sleep(0.2)
            r = c.get("/api/v1/status/events")
            assert r.status_code == 429 and r.json()["error"] == "rate_limited"
        finally:
            for s in opened:
                s.__exit__(None, None, None)


def test_needs_a_login(setup):
    server, _ = setup
    assert httpx.get(server.url + "/api/v1/status/events").status_code == 401

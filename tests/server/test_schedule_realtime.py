"""A schedule in real time, in a real server process: an every-minute schedule fires at the
next minute (its job runs on a real agent), and a server killed with SIGKILL right after
the firing and started again does not fire that minute a second time. At most ~65 s."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import pytest

from support.servers import ServerProc

pytestmark = pytest.mark.slow


def _firings(api, schedule_id):
    return api.get(f"/api/v1/schedules/{schedule_id}/firings").json()["firings"]


def test_every_minute_schedule_fires_once_through_a_kill(tmp_path: Path, db_url, agent):
    data = tmp_path / "srv"
    data.mkdir()
    marks = tmp_path / "executions"
    server = ServerProc(data, db_url).start()
    try:
        server.login()
        with server.api() as api:
            r = api.post("/api/v1/servers", json={"name": "h1", "agent_url": agent.url,
                                                  "agent_key": agent.key})  # fmt: skip
            assert r.status_code == 201, r.text
            r = api.post(
                "/api/v1/schedules",
                json={
                    "name": "minutely",
                    "cmd": f"date -u +%H:%M:%S >> {marks}",
                    "targets": {"servers": ["h1"]},
                    "cron": "* * * * *",
                    "timezone": "Europe/Berlin",
                },
            )
            assert r.status_code == 201, r.text
            sched = r.json()
            planned = dt.datetime.fromisoformat(sched["next_at"].replace("Z", "+00:00"))
            assert planned.second == 0
            assert 0 < (planned - dt.datetime.now(dt.UTC)).total_seconds() <= 60
            deadline = time.monotonic() + 75
            while not _firings(api, sched["id"]):
                assert time.monotonic() < deadline, "the schedule did not fire"
                time.sleep(0.2)
            (f,) = _firings(api, sched["id"])
            assert f["planned_at"] == sched["next_at"] and f["state"] == "fired"
            claimed = dt.datetime.fromisoformat(f["created_at"].replace("Z", "+00:00"))
            assert 0 <= (claimed - planned).total_seconds() < 5  # woke for it, not polled
            while api.get(f"/api/v1/jobs/{f['job_id']}").json()["state"] != "finished":
                assert time.monotonic() < deadline
                time.sleep(0.1)
        server.kill()  # SIGKILL, in the same minute
        server.start()
        with server.api() as api:
            time.sleep(1.5)  # the restarted scheduler has looked at the schedule
            again = _firings(api, sched["id"])
            assert [x["id"] for x in again if x["planned_at"] == f["planned_at"]] == [f["id"]]
            job = api.get(f"/api/v1/jobs/{f['job_id']}?output=1").json()
            assert job["kind"] == "schedule" and job["runs"][0]["state"] == "ok"
            if len(again) == 1:  # (unless the restart took us into the next minute)
                assert len(marks.read_text().splitlines()) == 1
                shown = api.get(f"/api/v1/schedules/{sched['id']}").json()
                nxt = planned + dt.timedelta(minutes=1)
                assert shown["next_at"] == nxt.isoformat().replace("+00:00", "Z")
    finally:
        server.stop()

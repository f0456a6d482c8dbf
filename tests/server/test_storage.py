"""A server whose disk fills up (issue 9): new jobs and logins are a clear 507 with a message,
not a 500; reads keep working; nothing that was acknowledged is lost — a run in flight when
the disk filled is stored once there is room, every job answered 201 ran — and once space
is freed everything works again.

For real: a ``kernel-server`` process whose data dir (SQLite) is a small tmpfs, or whose
PostgreSQL database lives in a tablespace on one; unmounted by path at the end, always."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from kernel.server.app import create_app
from kernel.server.components import components
from support.agents import Agent
from support.api import make_token
from support.disks import fill, tmpfs
from support.fixtures import PG_URL
from support.procs import wait_for
from support.servers import PASSWORD, ServerProc, app_config

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root"),
]

FULL_MESSAGE = "the server's disk is full"


class Disk:
    def __init__(self, mount: Path, data_dir: Path, db_url: str | None) -> None:
        self.mount, self.data_dir, self.db_url = mount, data_dir, db_url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def small_disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Disk]:
    """SQLite: the whole data dir on a 4 MiB tmpfs. PostgreSQL: the database (its tables, not
    the WAL) in a tablespace on a 16 MiB one — the template's catalogue takes ~8 MiB."""
    if request.param == "sqlite":
        with tmpfs(tmp_path / "disk", "4m") as mnt:
            (mnt / "data").mkdir()
            yield Disk(mnt, mnt / "data", None)
        return
    if not PG_URL:
        pytest.skip("KERNEL_TEST_PG_URL is not set (scripts/test starts PostgreSQL)")
    name = f"kt_full_{os.getpid()}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    # Not under tmp_path: the postgres user must reach the directory (pytest's are 0700).
    point = Path(tempfile.mkdtemp(prefix="kernel-pg-disk-"))
    with tmpfs(point, "16m", mode="0700") as mnt:
        shutil.chown(mnt, "postgres", "postgres")
        try:
            with admin.connect() as c:
                c.execute(text(f"CREATE TABLESPACE {name} LOCATION '{mnt}'"))
                c.execute(text(f'CREATE DATABASE "{name}" TABLESPACE {name}'))
            data = tmp_path / "data"
            data.mkdir()
            url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
            yield Disk(mnt, data, url)
        finally:
            with admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                c.execute(text(f"DROP TABLESPACE IF EXISTS {name}"))
            admin.dispose()
    point.rmdir()


def _job(api: httpx.Client, cmd: str) -> httpx.Response:
    return api.post("/api/v1/jobs", json={"cmd": cmd, "targets": {"all": True}})


def _token(srv: ServerProc) -> httpx.Response:
    body = {"username": "tester", "password": PASSWORD}
    return httpx.post(srv.url + "/api/v1/auth/token", json=body, timeout=30)


def _until_refused(send, limit: int = 200) -> list[httpx.Response]:  # type: ignore[no-untyped-def]
    """Send until the first 507 (a database may still have room in pages it already has):
    every answer before it is a success, the last one is the clear refusal."""
    answers = []
    for i in range(limit):
        r = send(i)
        answers.append(r)
        assert r.status_code in (201, 507), (r.status_code, r.text)
        if r.status_code == 507:
            body = r.json()
            assert body["error"] == "storage_full" and FULL_MESSAGE in body["message"], body
            return answers
    raise AssertionError(f"no 507 in {limit} requests on a full disk")


def _finished(api: httpx.Client, job_id: int) -> dict | None:
    job = api.get(f"/api/v1/jobs/{job_id}?output=1").json()
    return job if job["state"] in ("finished", "cancelled") else None


def test_full_disk_is_507_and_loses_nothing(small_disk: Disk, agent: Agent, tmp_path: Path):
    marks = tmp_path / "marks"  # on the agent's side: one file per command that really ran
    marks.mkdir()
    srv = ServerProc(small_disk.data_dir, small_disk.db_url)
    srv.start()
    try:
        srv.login()
        with srv.api() as api:
            body = {"name": "alpha", "agent_url": agent.url, "agent_key": agent.key}
            assert api.post("/api/v1/servers", json=body).status_code == 201
            before = _job(api, f"touch {marks}/before")
            assert before.status_code == 201
            wait_for(lambda: _finished(api, before.json()["id"]), 30)
            # Acknowledged, running on the agent while the disk fills.
            late = _job(api, f"sleep 2; touch {marks}/late; echo late")
            assert late.status_code == 201, late.text

            filler = fill(small_disk.mount)
            jobs = _until_refused(lambda i: _job(api, f"touch {marks}/job-{i}"))
            tokens = _until_refused(lambda _i: _token(srv))
            # Still refused, still clear; reads are served.
            assert _job(api, "true").status_code == 507
            assert api.get("/api/v1/jobs").status_code == 200
            assert api.get("/api/v1/me").status_code == 200
            assert httpx.get(srv.url + "/healthz").status_code == 200
            # The run in flight finishes on the agent while its result cannot be written.
            wait_for(lambda: (marks / "late").exists(), 30)
            time.sleep(1.5)
            assert srv.proc is not None and srv.proc.poll() is None

            filler.unlink()  # space again
            done = wait_for(lambda: _finished(api, late.json()["id"]), 30)
            assert [(r["state"], r["stdout"]) for r in done["runs"]] == [("ok", "late\n")]
            after = _job(api, f"touch {marks}/after")
            assert after.status_code == 201, after.text
            wait_for(lambda: _finished(api, after.json()["id"]), 30)
            assert _token(srv).status_code == 201

            # Every job answered 201 is there and ran once; the refused ones left nothing.
            accepted = [r.json()["id"] for r in jobs if r.status_code == 201]
            listed = {j["id"] for j in api.get("/api/v1/jobs?limit=500").json()["jobs"]}
            assert set(accepted) <= listed
            for job_id in accepted:
                job = wait_for(lambda job_id=job_id: _finished(api, job_id), 30)
                assert [r["state"] for r in job["runs"]] == ["ok"]
            ran = {p.name for p in marks.iterdir()}
            assert ran == {"before", "late", "after"} | {
                f"job-{i}" for i, r in enumerate(jobs) if r.status_code == 201
            }
            # Tokens answered 201 work; the refused ones were never stored.
            for r in tokens:
                if r.status_code == 201:
                    with srv.api(r.json()["token"]) as own:
                        assert own.get("/api/v1/me").status_code == 200
        assert srv.proc.poll() is None
        log = srv.log
        assert "the disk is full" in log
        assert "Traceback" not in log, log[-4000:]
    finally:
        srv.stop()


def test_database_gone_is_503_with_retry_after(tmp_path: Path):
    """The database cannot be opened at all (its disk gone): 503 ``unavailable`` with
    ``Retry-After``, JSON, no traceback; and it answers again once the database is back."""
    where = tmp_path / "db"
    where.mkdir()
    app = create_app(app_config(tmp_path, f"sqlite:///{where / 'kernel.db'}"))
    try:
        token = make_token(app, "ann", "admin")
        client = app.test_client()
        headers = {"Authorization": f"Bearer {token}"}
        assert client.get("/api/v1/me", headers=headers).status_code == 200
        where.rename(tmp_path / "db-away")
        components(app).db.engine.dispose()  # no pooled connection left to hide it
        r = client.get("/api/v1/me", headers=headers)
        assert r.status_code == 503, r.data
        assert r.get_json()["error"] == "unavailable" and r.headers["Retry-After"] == "5"
        (tmp_path / "db-away").rename(where)
        assert client.get("/api/v1/me", headers=headers).status_code == 200
    finally:
        components(app).close()

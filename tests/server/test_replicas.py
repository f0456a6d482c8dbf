"""Several servers on one database (docs/replicas.md): each must hold the installation's keys;
three of them behind a real nginx lose one mid-job, and nothing is run twice or left behind."""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from kernel.exceptions import ConfigError
from kernel.server.app import create_app
from kernel.server.cluster import share
from kernel.server.components import components
from support.nginx import Nginx
from support.servers import KERNEL_SERVER, ServerProc, app_config
from support.sse import Follower, parse_sse


def test_a_second_server_on_one_sqlite_file_is_refused(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    first = ServerProc(data).start()
    try:
        second = ServerProc(data)
        out = subprocess.run(
            [str(KERNEL_SERVER)], env=second.env, capture_output=True, text=True, timeout=60
        )
        assert out.returncode != 0
        assert "SQLite is for one server" in out.stderr and "PostgreSQL" in out.stderr, out
        assert "Traceback" not in out.stderr
        assert httpx.get(first.url + "/healthz").status_code == 200  # the first serves on
    finally:
        first.stop()


ON_POSTGRES = pytest.mark.parametrize("db_url", ["postgres"], indirect=True)  # emptied first


@ON_POSTGRES
def test_a_replica_needs_the_installations_keys(tmp_path, db_url):
    first = create_app(app_config(tmp_path / "a", db_url))
    parts = components(first)
    parts.membership.start()  # running: its heartbeat is in the database
    try:
        with pytest.raises(ConfigError, match=r"sealing key .* copy it from a server"):
            create_app(app_config(tmp_path / "b", db_url))
        shutil.copy(tmp_path / "a" / "data" / "sealing.key", tmp_path / "b" / "data")
        with pytest.raises(ConfigError, match="SECRET_KEY is not the one of the replicas"):
            create_app(app_config(tmp_path / "b", db_url, SECRET_KEY="another"))
        second = create_app(app_config(tmp_path / "b", db_url))  # the same keys: welcome
        components(second).close()
    finally:
        parts.close()
    # With no replica running, a new SECRET_KEY is a rotation: taken, and then the rule.
    rotated = create_app(app_config(tmp_path / "b", db_url, SECRET_KEY="rotated"))
    components(rotated).membership.start()
    try:
        with pytest.raises(ConfigError, match="SECRET_KEY"):
            create_app(app_config(tmp_path / "a", db_url))
    finally:
        components(rotated).close()


# -- three replicas behind nginx ----------------------------------------------------------------
HOSTS = 50
STALE = 3.0  # seconds without a heartbeat before a replica is gone (fast, for the test)
INTERVAL = 1.0  # seconds between probes of a host


def _replica(data: Path, db_url: str, network: str) -> ServerProc:
    data.mkdir(parents=True, exist_ok=True)
    return ServerProc(
        data,
        db_url,
        KERNEL_AGENT_NETWORKS=network,
        KERNEL_TRUSTED_PROXY="127.0.0.1",
        KERNEL_REPLICA_HEARTBEAT="0.5",
        KERNEL_REPLICA_STALE=str(STALE),
        KERNEL_STATUS_INTERVAL=str(INTERVAL),
    )


def _probes(host: Any, since: float, until: float) -> int:
    """Status probes the host's agent ran between two times (the output it keeps of each run)."""
    count = 0
    for f in (host.dir / "state" / "runs").glob("*.stdout"):
        with contextlib.suppress(OSError):
            if since <= f.stat().st_mtime <= until and "@@kernel-probe" in f.read_text():
                count += 1
    return count


class StatusReader:
    """Reads ``/api/v1/status/events`` for a while: the snapshot's size, the hosts changed."""

    def __init__(self, client: httpx.Client, seconds: float) -> None:
        self.client, self.seconds = client, seconds
        self.snapshot = 0
        self.hosts: set[int] = set()
        self.errors: list[str] = []

    def run(self) -> None:
        end = time.monotonic() + self.seconds
        try:
            with self.client.stream("GET", "/api/v1/status/events", timeout=30) as resp:
                buf = ""
                for chunk in resp.iter_text():
                    buf += chunk
                    while "\n\n" in buf:
                        block, buf = buf.split("\n\n", 1)
                        for ev in parse_sse(block + "\n\n"):
                            if "hosts" in ev:
                                self.snapshot = len(ev["hosts"])
                            elif "host" in ev:
                                self.hosts.add(ev["host"]["server_id"])
                    if time.monotonic() > end:
                        return
        except httpx.HTTPError as e:
            self.errors.append(f"{type(e).__name__}: {e}")


def _eventually(fn: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := fn()):
        assert time.monotonic() < deadline, what
        time.sleep(0.2)
    return value


@ON_POSTGRES
@pytest.mark.testbed
@pytest.mark.slow
def test_three_replicas_behind_nginx_lose_one_mid_job(light_hosts, db_url, tmp_path):
    bed = light_hosts(HOSTS)
    network = str(bed.record.network)
    engine = create_engine(db_url)
    first = _replica(tmp_path / "a", db_url, network).start()
    replicas = [first]
    proxy = None
    try:
        token = first.login()
        for name in ("b", "c"):  # a replica's data dir: the installation's two key files
            (tmp_path / name).mkdir()
            for key_file in ("secret_key", "sealing.key"):
                shutil.copy(first.data_dir / key_file, tmp_path / name / key_file)
            replicas.append(_replica(tmp_path / name, db_url, network).start())
        proxy = Nginx(tmp_path / "nginx", [r.url.removeprefix("http://") for r in replicas])
        proxy.start()
        api = httpx.Client(
            base_url=proxy.url, timeout=30, headers={"Authorization": f"Bearer {token}"}
        )

        def add(host: Any) -> None:
            body = {"name": host.name, "agent_url": host.agent_url, "agent_key": host.key}
            r = api.post("/api/v1/servers", json=body)
            assert r.status_code == 201, r.text

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(add, bed.hosts))
        assert api.get("/api/v1/servers").json()["total"] == HOSTS

        # Each host probed once per interval, by one of the three (not three times).
        def live() -> int:
            with engine.connect() as c:
                cut = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=STALE)
                return int(c.execute(text("SELECT count(*) FROM replicas WHERE seen_at > :c"),
                                     {"c": cut}).scalar() or 0)  # fmt: skip

        _eventually(lambda: live() == 3, 30, "three replicas beating")
        shown = api.get("/api/v1/status").json()["replicas"]
        assert len(shown) == 3 and all(r["alive"] for r in shown), shown
        assert sum(r["me"] for r in shown) == 1 and shown[0]["me"]
        time.sleep(2 * INTERVAL)  # every poller has seen the three
        # Meanwhile one replica's status stream (read directly, not through the proxy) shows
        # the changes the others' pollers find, and a second one is read through the proxy.
        direct = httpx.Client(
            base_url=replicas[2].url, timeout=30, headers={"Authorization": f"Bearer {token}"}
        )
        streams = [StatusReader(direct, 6.0), StatusReader(api, 6.0)]
        readers = [threading.Thread(target=r.run, daemon=True) for r in streams]
        for t in readers:
            t.start()
        since = time.time()
        time.sleep(6)
        until = time.time()
        for t in readers:
            t.join(15)
        counts = {h.name: _probes(h, since, until) for h in bed.hosts}
        rounds = (until - since) / INTERVAL
        assert max(counts.values()) <= rounds + 2, counts  # three pollers each: ~3x rounds
        assert min(counts.values()) >= 1, counts
        with engine.connect() as c:
            ids = dict(c.execute(text("SELECT name, id FROM servers")).all())
            beating = c.execute(text("SELECT id, pid FROM replicas")).all()
        third = next(r for r, pid in beating if pid == replicas[2].proc.pid)
        others = {
            ids[h.name]
            for h in bed.hosts
            if share.owner(ids[h.name], [r for r, _ in beating]) != third
        }
        for reader in streams:
            assert reader.snapshot == HOSTS, reader.errors
        relayed = streams[0].hosts & others  # probed by the two others, seen on the third
        assert len(relayed) >= len(others) // 2, (len(relayed), len(others), streams[0].errors)
        assert len(streams[1].hosts) >= HOSTS // 2, streams[1].errors  # through the proxy

        # A job on the 50 hosts through the proxy, followed live through the proxy; the
        # replica that sends its runs is killed while they run.
        ran = tmp_path / "ran"
        cmd = f"ip -4 -o addr show scope global | awk '{{print $4}}' >> {ran}; sleep 4; echo done"
        r = api.post("/api/v1/jobs", json={"cmd": cmd, "targets": {"all": True}})
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
        follower = Follower(api, job_id, timeout=120)
        reader = threading.Thread(target=follower.run, daemon=True)
        reader.start()
        _eventually(
            lambda: ran.exists() and len(ran.read_text().splitlines()) >= HOSTS // 2,
            60,
            "the runs started on the hosts",
        )
        with engine.connect() as c:
            owners = c.execute(
                text("SELECT DISTINCT r.pid FROM runs JOIN replicas r ON r.id = runs.owner "
                     "WHERE runs.job_id = :j"), {"j": job_id},
            ).scalars().all()  # fmt: skip
        victims = [p for p in replicas if p.proc and p.proc.pid in owners]
        assert victims, (owners, [p.proc.pid for p in replicas if p.proc])
        for victim in victims:
            victim.kill()  # SIGKILL, mid-job
        killed_at = time.time()

        def done() -> dict[str, Any] | None:
            job = api.get(f"/api/v1/jobs/{job_id}?output=1").json()
            return job if job["state"] in ("finished", "cancelled") else None

        job = _eventually(done, 90, "the job finished after its replica died")
        assert job["state"] == "finished"
        states = {run["server"]: (run["state"], run["stdout"]) for run in job["runs"]}
        assert set(states.values()) == {("ok", "done\n")}, states
        lines = ran.read_text().splitlines()
        assert len(lines) == HOSTS and len(set(lines)) == HOSTS, lines  # each host ran it once
        reader.join(60)
        end = follower.ended
        assert end is not None, (follower.errors, follower.events[-5:])
        assert end["state"] == "finished" and end["summary"]["ok"] == HOSTS, end

        # The dead replica's share of the hosts is probed by the two left.
        time.sleep(max(0.0, killed_at + STALE + 2 * INTERVAL - time.time()))
        since = time.time()
        time.sleep(4)
        after = {h.name: _probes(h, since, time.time()) for h in bed.hosts}
        assert min(after.values()) >= 1, after
        alive = [r for r in api.get("/api/v1/status").json()["replicas"] if r["alive"]]
        assert len(alive) == 3 - len(victims), alive
    finally:
        if proxy is not None:
            proxy.stop()
        for replica in replicas:
            replica.stop()
        engine.dispose()

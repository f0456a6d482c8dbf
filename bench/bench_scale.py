"""Scale: a real kernel-server on PostgreSQL against 100 to 10 000 simulated hosts (issue 14).

    .venv/bin/python bench/bench_scale.py                    # 100, 1000, 3000, 10000 hosts
    .venv/bin/python bench/bench_scale.py --hosts 100,1000   # fewer
    .venv/bin/python bench/bench_scale.py --quick            # 100 and 1000, fewer repeats
    .venv/bin/python bench/bench_scale.py --profile DIR      # py-spy the server (round, job)
    .venv/bin/python bench/bench_scale.py --from-json RUN.json --notes bench/notes/scale.md
                                      # re-render a run (--json) with its reading on top

The hosts are bench/swarm.py (processes of up to --swarm-hosts hosts each; an address and a
key per host, the agent's own signature and nonce checks; commands simulated with recorded
outputs and delays) — so the
figures are the server's, not the hosts'. The server is `kernel-server` as a subprocess
(waitress, runner, poller) on PostgreSQL (`scripts/postgres start`, a database of its own,
dropped at the end), with the example services in its catalogue (the probe asks for their
units) and no init scripts. Measured at each size: registering the hosts, a status round over
all of them, a job on all of them, `GET /api/v1/servers` (and its first page, if it has
pages), `GET /api/v1/status`; at the largest size also two replicas sharing the round.
Updates the ``scale`` section of docs/benchmarks.md (not with --no-doc).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import itertools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, insert, text
from sqlalchemy.engine import Engine, make_url

sys.path.insert(0, str(Path(__file__).resolve().parent))
import swarm as swarm_mod
from _report import table, write_section
from kernel.agent_client.base import KEEPALIVE

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PASSWORD = "bench-scale-password"
TARGETS = {"round": 10.0, "rss_mb": 1024.0, "job": 5.0, "servers": 0.3}


# ------------------------------------------------------------------------------ processes


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def load() -> str:
    return " / ".join(Path("/proc/loadavg").read_text().split()[:3])


def load1() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


class Proc:
    """A subprocess we started, stopped by its pid."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        self.fh = open(log, "ab")
        self.proc = subprocess.Popen(args, env=env, stdout=self.fh, stderr=self.fh)
        self.pid = self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.fh.close()


class Server:
    """kernel-server as a subprocess (as tests/support/servers.py ServerProc starts it)."""

    def __init__(self, data: Path, db_url: str, port: int, env: dict[str, str]) -> None:
        self.data = data
        self.url = f"http://127.0.0.1:{port}"
        self.env = {
            **os.environ,
            "KERNEL_DATA_DIR": str(data),
            "KERNEL_DATABASE_URL": db_url,
            "KERNEL_LISTEN": f"127.0.0.1:{port}",
            "KERNEL_URL": self.url,
            "KERNEL_AGENT_NETWORKS": "127.0.0.0/8",
            "KERNEL_INSTALL_EXAMPLES": "false",
            **env,
        }
        self.proc: Proc | None = None

    def cli(self, *args: str, stdin: str = "") -> str:
        out = subprocess.run(
            [str(BIN / "kernel-server"), *args], env=self.env, input=stdin.encode(),
            capture_output=True, timeout=120, check=True,
        )  # fmt: skip
        return out.stdout.decode()

    def start(self) -> Server:
        self.proc = Proc([str(BIN / "kernel-server")], self.data / "server.log", self.env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                if not self.proc.alive():
                    break
                time.sleep(0.1)
        raise RuntimeError("kernel-server did not start:\n" + self.log()[-3000:])

    def log(self) -> str:
        return (self.data / "server.log").read_text(errors="replace")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


def server_nofile(pid: int) -> int:
    """The process's soft open-file limit (kernel-server raises it to the hard one)."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    return 1024


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------------------ database


@contextlib.contextmanager
def database(pg_url: str) -> Iterator[str]:
    """A database of our own on the shared PostgreSQL, dropped at the end."""
    name = f"kernel_bench_scale_{os.getpid()}"
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(pg_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def pg_url(given: str | None) -> str:
    if given:
        return given
    if os.environ.get("KERNEL_TEST_PG_URL"):
        return os.environ["KERNEL_TEST_PG_URL"]
    out = subprocess.run(
        [str(ROOT / "scripts" / "postgres"), "start"], capture_output=True, check=True, text=True
    )
    return out.stdout.strip()


def bulk_register(engine: Engine, data: Path, hosts: list[dict[str, Any]], first: int) -> float:
    """The bench's bulk path: rows inserted as the server would store them (agent keys sealed
    with the installation's sealing.key), in one transaction — no agent check, no join probe.
    For benchmarks only; the API path is POST /api/v1/servers."""
    from kernel.server.core import sealing
    from kernel.server.models.servers import Server as ServerRow

    keyring = sealing.Keyring.from_file(data / "sealing.key")
    sealing.attach(engine, keyring)
    facts = {"bash": "5.2.15(1)-release", "os": "Debian GNU/Linux 12 (bookworm)",
             "systemd": "252", "warnings": [], "registered": "bench bulk path"}  # fmt: skip
    now = dt.datetime.now(dt.UTC)
    rows = [
        {
            "name": h["name"], "name_key": h["name"].lower(), "agent_url": h["agent_url"],
            "agent_key": h["key"], "description": "", "tags": tags_for(first + i),
            "state": "online", "facts": facts, "created_at": now, "last_seen": now,
        }
        for i, h in enumerate(hosts)
    ]  # fmt: skip
    t0 = time.monotonic()
    with engine.begin() as c:
        for i in range(0, len(rows), 1000):
            c.execute(insert(ServerRow), rows[i : i + 1000])
    return time.monotonic() - t0


def tags_for(index: int) -> list[str]:
    return ["swarm"]


# ------------------------------------------------------------------------------ measuring


class Watch:
    """Samples a process's RSS while a step runs (peak), and its CPU over the step."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.peak = 0.0
        self._stop = threading.Event()

    def __enter__(self) -> Watch:
        self.cpu0 = {k: cpu_seconds(p) for k, p in self.pids.items()}
        self.t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            with contextlib.suppress(OSError):
                self.peak = max(self.peak, rss_mb(self.pids["server"]))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.wall = time.monotonic() - self.t0
        self.cpu = {k: cpu_seconds(p) - self.cpu0[k] for k, p in self.pids.items()}
        self.cpu["swarm"] = sum(v for k, v in self.cpu.items() if k.startswith("swarm"))
        self.peak = max(self.peak, rss_mb(self.pids["server"]))


def wait_for(what: str, check: Callable[[], bool], timeout: float, pause: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(pause)


def probed_since(engine: Engine, since: dt.datetime) -> int:
    with engine.connect() as c:
        return int(
            c.execute(
                text("SELECT count(*) FROM host_status WHERE probed_at >= :t"),
                {"t": since},
            ).scalar_one()
        )


def status_round(
    servers: list[Server], engine: Engine, n: int, pids: dict[str, int], warm_up: bool = False
) -> dict[str, Any]:
    """POST /api/v1/status/refresh to every replica at once, until every host's new probe is
    stored (host_status.probed_at, read from the database). A warm-up round asks again every
    few seconds: a refresh skips hosts whose probe is in flight (just joined hosts' first)."""
    since = dt.datetime.now(dt.UTC)

    def refresh() -> None:
        threads = [
            threading.Thread(target=lambda s=s: api_post(s, "/api/v1/status/refresh", {}))
            for s in servers
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    with Watch(pids) as w:
        refresh()
        asked = 0.0
        for _ in range(20 if warm_up else 0):
            with contextlib.suppress(RuntimeError):
                wait_for("a status round", lambda: probed_since(engine, since) >= n, 30, 0.05)
                break
            asked = time.time()
            refresh()
        wait_for("a status round", lambda: probed_since(engine, since) >= n, 600, 0.05)
    if asked:  # the round asked again is over too (its hosts in flight would be skipped)
        wait_for("the poller's last round", lambda: all(
            timed_get(s, "/api/v1/status", 1)[2]["poller"]["last_round"].get("at", 0) > asked
            for s in servers), 120, 0.5)  # fmt: skip
    return {"wall": w.wall, "rss": w.peak, "cpu": w.cpu}


TOKENS: dict[str, str] = {}


def api(server: Server) -> httpx.Client:
    return httpx.Client(
        base_url=server.url, timeout=300, headers={"Authorization": f"Bearer {TOKENS['admin']}"}
    )


def api_post(server: Server, path: str, body: Any) -> Any:
    with api(server) as c:
        r = c.post(path, json=body)
        assert r.status_code in (200, 201, 202), r.text
        return r.json()


def job_all(server: Server, engine: Engine, n: int, pids: dict[str, int]) -> dict[str, Any]:
    """`uptime` on every host: POST /api/v1/jobs until the job is finished (every run stored)."""
    with api(server) as c, Watch(pids) as w:
        r = c.post("/api/v1/jobs", json={"cmd": "uptime", "targets": {"all": True}})
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]

        def finished() -> bool:
            with engine.connect() as db:
                return (
                    db.execute(
                        text("SELECT state FROM jobs WHERE id = :i"), {"i": job_id}
                    ).scalar_one()
                    == "finished"
                )

        wait_for("the job", finished, 600, 0.02)
    with engine.connect() as db:
        states = dict(
            db.execute(
                text("SELECT state, count(*) FROM runs WHERE job_id = :i GROUP BY state"),
                {"i": job_id},
            ).all()
        )
    if states.get("ok", 0) != n:
        print(f"job {job_id}: runs {states}", file=sys.stderr)
    return {"wall": w.wall, "rss": w.peak, "cpu": w.cpu, "ok": states.get("ok", 0)}


def timed_get(server: Server, path: str, repeat: int) -> tuple[float, int, Any]:
    times = []
    with api(server) as c:
        for _ in range(repeat):
            t0 = time.perf_counter()
            r = c.get(path)
            times.append(time.perf_counter() - t0)
            assert r.status_code == 200, r.text
    return statistics.median(times), len(r.content), r.json()


def console_session(server: Server) -> httpx.Client:
    """A logged-in console session (the login form, its CSRF token, the session cookie)."""
    import re

    c = httpx.Client(base_url=server.url, timeout=300, headers={"Accept": "text/html"})
    form = c.get("/login").text
    m = re.search(r'name="csrf_token" value="([^"]+)"', form)
    assert m, "no CSRF token on the login form"
    r = c.post("/login", data={"csrf_token": m.group(1), "next": "/", "username": "bench",
                               "password": PASSWORD})  # fmt: skip
    assert r.status_code in (200, 302, 303), r.text[:300]
    assert "/login" not in r.headers.get("location", "/"), "the console refused the login"
    return c


def timed_dashboard(server: Server, n: int, repeat: int) -> tuple[float, int]:
    """GET / (the dashboard's first page: DASHBOARD_PAGE servers) in a logged-in session."""
    times = []
    c = console_session(server)
    try:
        c.get("/")  # warm
        for _ in range(repeat):
            t0 = time.perf_counter()
            r = c.get("/")
            times.append(time.perf_counter() - t0)
            assert r.status_code == 200, r.text[:300]
    finally:
        c.close()
    shown = r.text.count("data-server-id=")
    assert shown >= min(n, 500), f"the dashboard shows {shown} servers"
    return statistics.median(times), len(r.content)


@contextlib.contextmanager
def profiled(pid: int, out: Path | None, seconds: float = 60) -> Iterator[None]:
    """py-spy record of ``pid`` (all threads, native frames off) while the block runs."""
    spy = shutil.which("py-spy") or str(BIN / "py-spy")
    if out is None or not Path(spy).exists():
        yield
        return
    p = subprocess.Popen(
        [spy, "record", "-p", str(pid), "-r", "200", "-d", str(int(seconds)), "-f", "raw",
         "-o", str(out), "--threads", "--gil", "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(1.0)
    try:
        yield
    finally:
        p.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(30)
        if p.poll() is None:
            p.kill()
            p.wait()


# ------------------------------------------------------------------------------ the bench


def ms(x: float) -> str:
    return f"{x * 1000:.0f} ms" if x < 10 else f"{x:.1f} s"


def secs(x: float) -> str:
    return f"{x * 1000:.0f} ms" if x < 1 else f"{x:.2f} s"


def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = sorted(int(x) for x in args.hosts.split(","))
    top = sizes[-1]
    results: dict[str, Any] = {"sizes": {}, "load_start": load(), "replicas": None}
    settings = {
        "KERNEL_STATUS_INTERVAL": "3600",  # rounds are the bench's (POST /api/v1/status/refresh)
        "KERNEL_STATUS_CONCURRENCY": str(args.status_concurrency),
        "KERNEL_JOB_CONCURRENCY": str(args.job_concurrency),
        "KERNEL_RUN_START_TIMEOUT": "30",
        "KERNEL_AGENT_CONNECT_TIMEOUT": "10",
    }
    results["settings"] = settings
    # The runner and the poller each keep a connection to every host: 2 x 10 000 descriptors
    # in the server, which inherits this limit (raised, hard limit too, when run as root).
    results["nofile"] = swarm_mod.raise_nofile(65536)
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kernel-scale-")))
        url = stack.enter_context(database(pg_url(args.pg_url)))
        engine = create_engine(url, pool_size=2)
        stack.callback(engine.dispose)
        # Several swarm processes (one seed) when one would pass its open-file limit: a
        # listening socket per host and a connection from each of the server's two pools.
        seed = os.urandom(16).hex()
        swarms: list[Proc] = []
        hosts: list[dict[str, Any]] = []
        for k, first in enumerate(range(0, top, args.swarm_hosts)):
            count = min(args.swarm_hosts, top - first)
            sw = Proc(
                [sys.executable, str(ROOT / "bench" / "swarm.py"), "serve", "--hosts",
                 str(count), "--first", str(first), "--seed", seed,
                 "--hosts-file", str(tmp / f"hosts{k}.json"), "--port", str(args.port),
                 "--base", args.base, "--probe-ms", args.probe_ms, "--exec-ms", args.exec_ms],
                tmp / f"swarm{k}.log",
            )  # fmt: skip
            stack.callback(sw.stop)
            swarms.append(sw)
        for k, sw in enumerate(swarms):
            wait_for("the swarm", lambda sw=sw: "swarm ready" in sw.log.read_text(), 300, 0.2)
            hosts += json.loads((tmp / f"hosts{k}.json").read_text())
        data = tmp / "a"
        data.mkdir()
        copy_catalogue(data)
        a = Server(data, url, free_port(), settings)
        a.cli("create-user", "bench", "--role", "admin", "--password-stdin", stdin=PASSWORD)
        a.start()
        stack.callback(a.stop)
        r = httpx.post(a.url + "/api/v1/auth/token",
                       json={"username": "bench", "password": PASSWORD})  # fmt: skip
        assert r.status_code == 201, r.text
        TOKENS["admin"] = r.json()["token"]
        pids = {"server": a.pid, **{f"swarm{k}": sw.pid for k, sw in enumerate(swarms)}}
        results["swarms"] = len(swarms)
        nofile = server_nofile(a.pid)
        results["server_nofile"] = nofile
        done = 0
        for n in sizes:
            row: dict[str, Any] = {"hosts": n, "load_before": load1()}
            batch = hosts[done:n]
            api_part = batch if args.register == "api" else []
            if args.register == "auto":
                api_part = batch[: max(0, args.api_limit - done)]
            bulk_part = batch[len(api_part) :]
            reg: dict[str, Any] = {}
            if api_part:
                seconds, errors = swarm_mod.register(a.url, TOKENS["admin"], api_part,
                                                     args.parallel, tags_for, done)  # fmt: skip
                if errors:
                    raise RuntimeError(f"registering failed: {errors[:3]}")
                reg["api"] = (len(api_part), seconds)
            if bulk_part:
                reg["bulk"] = (len(bulk_part), bulk_register(engine, data, bulk_part,
                                                             done + len(api_part)))  # fmt: skip
            done = n
            row["register"] = reg
            # Every host probed once (a joined host is probed at once; bulk rows at a round).
            status_round([a], engine, n, pids, warm_up=True)
            rounds = [status_round([a], engine, n, pids) for _ in range(args.rounds + 1)][1:]
            if args.profile and n == top:
                with profiled(a.pid, args.profile / f"round-{n}.txt"):
                    status_round([a], engine, n, pids)
            row["round"] = statistics.median(r["wall"] for r in rounds)
            row["round_worst"] = max(r["wall"] for r in rounds)
            row["round_cpu"] = statistics.median(r["cpu"]["server"] for r in rounds)
            row["round_swarm_cpu"] = statistics.median(r["cpu"]["swarm"] for r in rounds)
            row["rss"] = max(r["rss"] for r in rounds)
            if 2 * n + 1000 > nofile:
                # Not room for both pools' connections (the runner's and the poller's, one per
                # host each): let the poller's idle ones go (keep-alive) before the jobs.
                row["waited_keepalive"] = True
                time.sleep(KEEPALIVE + 5)
            jobs = [job_all(a, engine, n, pids) for _ in range(args.jobs)]
            if args.profile and n == top:
                with profiled(a.pid, args.profile / f"job-{n}.txt"):
                    job_all(a, engine, n, pids)
            row["job_cold"] = jobs[0]["wall"]
            row["job_warm"] = (
                statistics.median(j["wall"] for j in jobs[1:]) if len(jobs) > 1 else None
            )
            row["job_cpu"] = statistics.median(j["cpu"]["server"] for j in jobs)
            row["job_ok"] = min(j["ok"] for j in jobs)
            row["rss"] = max(row["rss"], *(j["rss"] for j in jobs))
            # GET /api/v1/servers answers a page (?limit=, default and most 1000) and total.
            t, size, body = timed_get(a, "/api/v1/servers", args.repeat)
            row["servers"], row["servers_bytes"] = t, size
            assert body["total"] == n, body["total"]
            t, size, body = timed_get(a, "/api/v1/servers?limit=100", args.repeat)
            row["servers_page"] = (t, size)
            row["dashboard"] = timed_dashboard(a, n, args.repeat)
            t, size, body = timed_get(a, "/api/v1/status", max(1, args.repeat // 2))
            row["status_get"], row["status_bytes"] = t, size
            row["last_round"] = body["poller"]["last_round"]
            row["rss_hwm"] = rss_mb(a.pid, "VmHWM")
            row["load_after"] = load1()
            results["sizes"][n] = row
            print(json.dumps(row, default=str), flush=True)
        if args.replicas:
            results["replicas"] = replicas(a, data, url, tmp, settings, engine, top, pids, args)
        results["load_end"] = load()
        results["swarm_log"] = (tmp / "swarm0.log").read_text()[-2000:]
    return results


def copy_catalogue(data: Path) -> None:
    """The example services (their units are asked by every probe), not the init scripts."""
    from kernel.server.core.datadir import install_examples

    install_examples(data)
    shutil.rmtree(data / "init")
    (data / "init").mkdir()


def replicas(a: Server, data: Path, url: str, tmp: Path, settings: dict[str, str],
             engine: Engine, n: int, pids: dict[str, int],
             args: argparse.Namespace) -> dict[str, Any]:  # fmt: skip
    """A second kernel-server on the same database (its own data dir, the same secret_key
    and sealing.key, the same catalogue); both share the status round."""
    one = [status_round([a], engine, n, pids) for _ in range(args.rounds)]
    data_b = tmp / "b"
    data_b.mkdir()
    for f in ("secret_key", "sealing.key"):
        shutil.copy2(data / f, data_b / f)
    shutil.copytree(data / "service", data_b / "service")
    (data_b / "init").mkdir()
    b = Server(data_b, url, free_port(), settings).start()
    try:

        def live() -> int:
            with engine.connect() as c:
                return int(
                    c.execute(
                        text("SELECT count(*) FROM replicas WHERE seen_at > now() - interval '8 s'")
                    ).scalar_one()
                )

        wait_for("two live replicas", lambda: live() >= 2, 30, 0.2)
        time.sleep(3)  # B's own first round over its share
        both_pids = {**pids, "server_b": b.pid}
        two = [
            status_round([a, b], engine, n, both_pids, warm_up=i < 2)
            for i in range(args.rounds + 2)
        ][2:]
        # Each replica's last round: how many hosts it probed (its rendezvous share).
        shares = [timed_get(x, "/api/v1/status", 1)[2]["poller"]["last_round"].get("hosts")
                  for x in (a, b)]  # fmt: skip
    finally:
        b.stop()
    return {
        "hosts": n,
        "one": statistics.median(r["wall"] for r in one),
        "two": statistics.median(r["wall"] for r in two),
        "one_cpu": statistics.median(r["cpu"]["server"] for r in one),
        "two_cpu": statistics.median(r["cpu"]["server"] + r["cpu"]["server_b"] for r in two),
        "rounds": len(two),
        "shares": shares,
    }


def marginal(sizes: dict[int, dict[str, Any]], key: str) -> list[tuple[int, int, float]]:
    """The curve as the cost of each added host: (from, to, ms per added host) per step."""
    ns = sorted(n for n in sizes if sizes[n].get(key) is not None)
    return [
        (a, b, (sizes[b][key] - sizes[a][key]) / (b - a) * 1000) for a, b in itertools.pairwise(ns)
    ]


def bend(sizes: dict[int, dict[str, Any]], key: str) -> str:
    """Where the curve bends: the first step whose cost per added host is 1.5x or more the
    step before's (a flat curve is linear growth: a constant cost per host)."""
    steps = marginal(sizes, key)
    for (_, _, before), (a, b, now) in itertools.pairwise(steps):
        if before > 0 and now > 1.5 * before:
            return f"between {a} and {b} hosts"
    return f"nowhere up to {max(sizes)} hosts" if steps else "-"


def curve(sizes: dict[int, dict[str, Any]], key: str) -> str:
    return ", ".join(f"{a}→{b}: {ms_:.2f} ms" for a, b, ms_ in marginal(sizes, key))


def report(res: dict[str, Any], args: argparse.Namespace) -> str:
    sizes = res["sizes"]
    rows = []
    for n, r in sorted(sizes.items()):
        reg = r["register"]
        regtext = ", ".join(
            f"{k} {c} in {secs(s)} ({c / s:.0f}/s)" for k, (c, s) in reg.items() if c
        )
        page = f"{secs(r['servers_page'][0])}"
        dash = f"{secs(r['dashboard'][0])} ({r['dashboard'][1] / 1e6:.1f} MB)"
        rows.append([
            n, secs(r["round"]), f"{r['round'] / n * 1000:.2f} ms",
            f"{r['round_cpu']:.1f} s", f"{r['round_swarm_cpu']:.1f} s",
            f"{r['rss']:.0f} MiB",
            secs(r["job_cold"]), secs(r["job_warm"]) if r["job_warm"] else "-",
            f"{r['job_cpu']:.1f} s",
            f"{secs(r['servers'])} ({r['servers_bytes'] / 1e6:.1f} MB)", page, dash,
            f"{secs(r['status_get'])} ({r['status_bytes'] / 1e6:.1f} MB)",
            f"{r['load_before']:.1f}", regtext,
        ])  # fmt: skip
    body = table(
        ["hosts", "status round", "per host", "server CPU", "swarm CPU", "server RSS peak",
         "job (cold)", "job (warm)", "server CPU/job", "GET servers (page of 1000)",
         "?limit=100", "dashboard (page of 500)",
         "GET status (page of 1000)", "load", "registered"],
        rows,
    )  # fmt: skip
    top = max(sizes)
    t = sizes[top]
    checks = [
        (f"status round, {top} hosts", "< 10 s", secs(t["round"]), t["round"] < TARGETS["round"]),
        (f"server RSS, {top} hosts", "< 1 GiB", f"{t['rss']:.0f} MiB",
         t["rss"] < TARGETS["rss_mb"]),
        (f"job on all, {top} hosts", "< 5 s", secs(t["job_warm"] or t["job_cold"]),
         (t["job_warm"] or t["job_cold"]) < TARGETS["job"]),
        (f"GET /api/v1/servers (first page), {top} hosts", "< 300 ms", secs(t["servers"]),
         t["servers"] < TARGETS["servers"]),
        (f"dashboard (first page), {top} hosts", "< 300 ms", secs(t["dashboard"][0]),
         t["dashboard"][0] < TARGETS["servers"]),
    ]  # fmt: skip
    rep = res.get("replicas")
    if rep:
        checks.append(
            (f"round with two replicas, {rep['hosts']} hosts", "<= one replica's",
             f"{secs(rep['two'])} vs {secs(rep['one'])}", rep["two"] <= rep["one"] * 1.0)
        )  # fmt: skip
    body += "\n\n" + table(
        ["target", "wanted", "measured", "met"],
        [[a, b, c, "yes" if ok else "NO"] for a, b, c, ok in checks],
    )
    body += (
        "\n\n*The curve*, as the cost of each added host between sizes (wall time; server"
        f" CPU): status round {curve(sizes, 'round')} ({curve(sizes, 'round_cpu')} CPU);"
        f" job (warm) {curve(sizes, 'job_warm')} ({curve(sizes, 'job_cpu')} CPU)."
        f" The round's curve bends {bend(sizes, 'round')}, the job's"
        f" {bend(sizes, 'job_warm')}; server CPU bends {bend(sizes, 'round_cpu')} (rounds)"
        f" and {bend(sizes, 'job_cpu')} (jobs)."
    )
    if rep:
        body += (
            f"\n\nTwo replicas ({rep['hosts']} hosts, two `kernel-server` processes on one"
            f" PostgreSQL, each polling its rendezvous share): round {secs(rep['two'])} (median"
            f" of {rep['rounds']}) against {secs(rep['one'])} with one; servers' CPU per round"
            f" {rep['two_cpu']:.1f} s together against {rep['one_cpu']:.1f} s; the last"
            f" round's hosts probed by each: {' + '.join(str(x) for x in rep['shares'])}."
            " Both replicas"
            " share this machine's 2 CPUs (and the swarm, and PostgreSQL): on separate"
            " machines each would have its own."
        )
    s = res["settings"]
    body += (
        f"\n\n*Status round*: `POST /api/v1/status/refresh` until every host's new probe is"
        f" stored (`host_status.probed_at`, read from the database), median of {args.rounds}"
        f" after one warm-up round; *per host* = round / hosts (flat while the server keeps"
        f" up). *Job*: `POST /api/v1/jobs` (`uptime`,"
        f" `targets: all`) until the job is `finished` (every run stored); cold = the first"
        f" at that size (the runner opens its connections), warm = median of the next"
        f" {max(0, args.jobs - 1)}. Server CPU = the kernel-server process's user + system"
        f" time over the step (all threads); swarm CPU = the swarm's over a round. RSS = the"
        f" server's resident memory, sampled every 100 ms (peak over the size's steps)."
        f" *GET* times are medians of {args.repeat} (status: of {max(1, args.repeat // 2)})"
        f" with the answer's size. Settings: STATUS_CONCURRENCY {s['KERNEL_STATUS_CONCURRENCY']},"
        f" JOB_CONCURRENCY {s['KERNEL_JOB_CONCURRENCY']}, the rest the defaults."
        f"\n\nThe hosts are one `bench/swarm.py` process (*The swarm*, below): an address on lo"
        f" and an agent key per host, every request's signature and nonce checked with the"
        f" agent's own functions; a probe takes {args.probe_ms} ms (each host its own time),"
        f" any other command {args.exec_ms} ms; answers are recorded real outputs. So the"
        f" hosts cost the machine little (the swarm CPU column) and the figures are the"
        f" server's. Everything — server, swarm, PostgreSQL, the bench — shares this"
        f" machine's 2 CPUs with other engineers' work: load average (1/5/15 min)"
        f" {res['load_start']} at the start, {res['load_end']} at the end (the *load* column"
        f" is the 1-minute figure before each size). With a load of 10 on 2 CPUs a"
        f" CPU-bound step takes several times what it would on an idle machine: compare"
        f" sizes with each other (per host, CPU seconds) rather than with the targets alone."
    )
    waited = [str(n) for n, r in sorted(sizes.items()) if r.get("waited_keepalive")]
    body += (
        f"\n\n*Limits.* The server holds a kept-alive connection to every host in each of its"
        f" two pools (the runner's and the poller's): 2 x hosts descriptors, plus its"
        f" database pool. `kernel-server` raises its soft open-file limit to the hard one at"
        f" start (core/process.py); systemd's default hard limit (524 288) is ample, but"
        f" this machine's is {res.get('server_nofile', '?')} and cannot be raised (no"
        f" CAP_SYS_RESOURCE), so at {', '.join(waited) or 'no size'} hosts the bench let the"
        f" poller's idle connections expire (keep-alive, {KEEPALIVE:.0f} s) before the jobs,"
        f" and it splits the hosts over {res.get('swarms', 1)} swarm processes (a listening"
        f" socket per host and up to two connections each). No sysctl is needed: all of"
        f" 127/8 is routed to lo, the server's connections go from 127.0.0.1 to a different"
        f" address per host (no ephemeral-port shortage), and each host's backlog is its own"
        f" socket's. PostgreSQL is `scripts/postgres` (fsync off, as in the tests)."
        f"\n\n*The swarm* (`bench/swarm.py`): one asyncio process serving thousands of"
        f" simulated hosts, in the spirit of Salt's minion swarm — each with its own address"
        f" on lo (127.64.x.y), its own agent key (derived from a secret seed), its own nonce"
        f" cache and runs. Every request is checked as the agent checks it, with the agent's"
        f" own functions (`verify_signature`, `NonceCache`, `parse_json_body`,"
        f" `parse_exec_request`, its error bodies; tests/bench/test_swarm.py: a wrong key and"
        f" a replayed nonce are refused). Nothing runs: the status probe is answered with a"
        f" recorded real probe (tests/data/probe/full-host-systemd.json) varied per host and"
        f" per probe (hostname, CPU counters, load, memory, disk, uptime, which catalogue"
        f" units are installed), other commands with canned outputs, each after its delay."
        f" A benchmark tool only: the test suite's hosts are real agents."
    )
    return body


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hosts", default="100,1000,3000,10000")
    p.add_argument("--quick", action="store_true", help="100 and 1000 hosts, fewer repeats")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--jobs", type=int, default=3, help="jobs per size (the first is cold)")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument(
        "--register",
        choices=("api", "bulk", "auto"),
        default="auto",
        help="auto: the REST API up to --api-limit hosts, the bench's bulk path after",
    )
    p.add_argument("--api-limit", type=int, default=1000)
    p.add_argument("--parallel", type=int, default=32, help="registrations at once")
    p.add_argument("--status-concurrency", type=int, default=256)
    p.add_argument("--job-concurrency", type=int, default=512)
    p.add_argument("--probe-ms", default="50-200")
    p.add_argument("--exec-ms", default="2-5")
    p.add_argument("--base", default=swarm_mod.DEFAULT_BASE)
    p.add_argument("--port", type=int, default=8001)
    p.add_argument("--swarm-hosts", type=int, default=3000, help="hosts per swarm process")
    p.add_argument("--pg-url", default=None)
    p.add_argument("--no-replicas", dest="replicas", action="store_false")
    p.add_argument("--profile", type=Path, default=None, help="py-spy outputs here")
    p.add_argument("--no-doc", action="store_true", help="print, do not update the doc")
    p.add_argument("--json", type=Path, default=None, help="also write the raw figures here")
    p.add_argument("--from-json", type=Path, default=None, help="report a --json file's run")
    p.add_argument("--notes", type=Path, default=None, help="a reading of the figures, put first")
    args = p.parse_args()  # fmt: skip
    # SIGTERM (timeout, a CI stop) unwinds: the swarms, the servers, the database go too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.quick:
        args.hosts = "100,1000" if args.hosts == p.get_default("hosts") else args.hosts
        args.rounds, args.jobs, args.repeat = 2, 2, 3
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    if args.from_json:  # re-render a run's figures (docs/benchmarks.md) without re-running
        res = json.loads(args.from_json.read_text())
        res["sizes"] = {int(k): v for k, v in res["sizes"].items()}
    else:
        res = run(args)
    if args.json:
        args.json.write_text(json.dumps(res, default=str, indent=1))
    body = report(res, args)
    if args.notes:  # what the figures say (written after reading them), kept with them
        body = args.notes.read_text().strip() + "\n\n" + body
    if args.no_doc:
        print(body)
    else:
        write_section("scale", "Scale: 100 to 10 000 hosts (swarm), PostgreSQL", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())

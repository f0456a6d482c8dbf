"""The `kernel` command: whole-process wall time of ``kernel exec -- uptime`` on 1 and 10 light
test hosts, from fork to exit, as a user (or a script) pays it. Target: 1 host <= 60 ms.

Run as root: ``.venv/bin/python bench/bench_cli.py [--quick]``. Updates the ``cli`` section
of docs/benchmarks.md. A real ``kernel-server`` process (SQLite in a temporary data dir, no
status poller, no example services or init scripts) and real agents in network namespaces;
the CLI runs as a fresh process each time, exactly as installed (the venv's ``kernel``
script). Calibration in the same run: ``python -c pass`` (the interpreter's own start), the
import of the exec path, and the server side of each job (created → finished, from its
timestamps).

Written so that other tools can be put beside it later (issue 12's peer benchmark): a tool
is an argv for N hosts; `wall_times` runs any argv the same way.
"""

from __future__ import annotations

import argparse
import compileall
import datetime as dt
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx

from _report import table, write_section
from kernel.testbed import Testbed, unsupported_reason

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
KERNEL = BIN / "kernel"
TARGET_1 = 0.060


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``kernel-server`` as a subprocess with a user and a token."""

    def __init__(self, data: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        for sub in ("init", "service"):  # present and empty: no examples are copied in
            (data / sub).mkdir(parents=True)
        self.env = {
            **os.environ,
            "KERNEL_DATA_DIR": str(data),
            "KERNEL_LISTEN": f"127.0.0.1:{self.port}",
            "KERNEL_URL": self.url,
            "KERNEL_STATUS_POLLER": "false",
            "KERNEL_INSTALL_EXAMPLES": "false",
        }
        self.log = open(data / "server.log", "ab")  # closed in stop()
        subprocess.run(
            [
                str(BIN / "kernel-server"),
                "create-user",
                "bench",
                "--role",
                "admin",
                "--password-stdin",
            ],
            env=self.env,
            input=b"bench-password\n",
            check=True,
            capture_output=True,
        )
        self.proc = subprocess.Popen(
            [str(BIN / "kernel-server")], env=self.env, stdout=self.log, stderr=self.log
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(self.url + "/healthz", timeout=0.5).status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("kernel-server did not start") from None
                time.sleep(0.05)
        r = httpx.post(
            self.url + "/api/v1/auth/token",
            json={"username": "bench", "password": "bench-password"},
        )
        r.raise_for_status()
        self.token = r.json()["token"]
        self.api = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=60
        )

    def stop(self) -> None:
        self.api.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.log.close()


def compile_cli() -> None:
    """As pip installs a package: bytecode compiled. (PYTHONDONTWRITEBYTECODE=1, set on some
    machines, would otherwise make every run compile the CLI's modules from source.)"""
    compileall.compile_dir(str(REPO / "src" / "kernel" / "cli"), quiet=1)
    compileall.compile_file(str(REPO / "src" / "kernel" / "__init__.py"), quiet=1)
    compileall.compile_file(str(REPO / "src" / "kernel" / "exceptions.py"), quiet=1)


def wall_times(argv: Sequence[str], runs: int, env: dict[str, str] | None = None) -> list[float]:
    """Wall time of each run of ``argv`` as a new process (output discarded, must exit 0)."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        times.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise RuntimeError(f"{argv[:4]} exited {proc.returncode}: {proc.stderr[-500:]!r}")
    return times


def kernel_exec(names: Sequence[str]) -> list[str]:
    """The tool under test: ``kernel exec -s h1 -s h2 … -- uptime``."""
    argv = [str(KERNEL), "exec", "-q"]
    for n in names:
        argv += ["-s", n]
    return [*argv, "--", "uptime"]


def server_side(server: Server, since_id: int) -> list[float]:
    """created → finished of each job after ``since_id`` (the server's own timestamps)."""
    jobs = server.api.get("/api/v1/jobs?limit=500").json()["jobs"]
    out = []
    for j in jobs:
        if j["id"] > since_id and j["finished_at"]:
            t0 = dt.datetime.fromisoformat(j["created_at"].replace("Z", "+00:00"))
            t1 = dt.datetime.fromisoformat(j["finished_at"].replace("Z", "+00:00"))
            out.append((t1 - t0).total_seconds())
    return out


def last_job_id(server: Server) -> int:
    jobs = server.api.get("/api/v1/jobs?limit=1").json()["jobs"]
    return int(jobs[0]["id"]) if jobs else 0


def ms(x: float) -> str:
    return f"{x * 1000:.1f} ms"


def stats(times: list[float]) -> tuple[str, str, str]:
    q = sorted(times)
    p90 = q[min(len(q) - 1, round(0.9 * (len(q) - 1)))]
    return ms(statistics.median(q)), ms(q[0]), ms(p90)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    reason = unsupported_reason("light")
    if reason:
        print(f"bench_cli: cannot make test hosts here: {reason}", file=sys.stderr)
        return 1
    runs = 8 if args.quick else 30
    compile_cli()
    load = os.getloadavg()[0]
    py = [sys.executable]
    calib: list[tuple[str, Callable[[], list[float]]]] = [
        ("`python -c pass`", lambda: wall_times([*py, "-c", "pass"], runs)),
        (
            "`python -c 'import kernel.cli.execute'` (the exec path's imports)",
            lambda: wall_times([*py, "-c", "import kernel.cli.main, kernel.cli.execute"], runs),
        ),
        (
            "`python -c 'import json, _socket'`",
            lambda: wall_times([*py, "-c", "import json, _socket"], runs),
        ),
        ("`kernel --help` (click's path)", lambda: wall_times([str(KERNEL), "--help"], runs)),
    ]
    calib_rows = [[name, *stats(fn())] for name, fn in calib]
    rows = []
    with tempfile.TemporaryDirectory(prefix="kernel-bench-cli-") as tmp:
        bed = Testbed(10, "light").up()
        server = Server(Path(tmp) / "data")
        try:
            for h in bed.hosts:
                r = server.api.post(
                    "/api/v1/servers",
                    json={"name": h.name, "agent_url": h.agent_url, "agent_key": h.key},
                )
                r.raise_for_status()
            env = {**os.environ, "KERNEL_URL": server.url, "KERNEL_TOKEN": server.token}
            env.pop("KERNEL_CONFIG", None)
            names = [h.name for h in bed.hosts]
            for n, target in ((1, TARGET_1), (10, None)):
                argv = kernel_exec(names[:n])
                wall_times(argv, 2, env)  # warm the server's connections to the agents
                before = last_job_id(server)
                times = wall_times(argv, runs, env)
                side = server_side(server, before)
                med = statistics.median(times)
                met = "-" if target is None else ("yes" if med <= target else "NO")
                rows.append(
                    [
                        n,
                        *stats(times),
                        ms(statistics.median(side)) if side else "-",
                        ms(med - statistics.median(side)) if side else "-",
                        "-" if target is None else ms(target),
                        met,
                    ]
                )
        finally:
            server.stop()
            bed.down()
    body = (
        "`kernel exec -q -s HOST… -- uptime`, a new process each time, from fork to exit:\n"
        "interpreter start, imports, reading the profile, `POST /api/v1/jobs`, the job's\n"
        "live events until `end`, the output, exit. A real `kernel-server` (SQLite, no\n"
        "poller) and real agents on light test hosts share the 2 CPUs with the CLI; figures\n"
        f"swing with the machine's load (load average at start: {load:.1f}). {runs} runs each.\n"
        '"Server side" is the job\'s created → finished from its own timestamps; the rest\n'
        "is the client: start-up, two requests, printing.\n\n"
        + table(
            ["hosts", "median", "best", "p90", "server side", "client (rest)", "target", "met"],
            rows,
        )
        + "\n\nCalibration in the same run (wall time of a new process, median / best / p90):\n\n"
        + table(["process", "median", "best", "p90"], calib_rows)
        + "\n\nThe exec path imports no click, no `http.client`, no `socket`/`ssl`, no `typing`"
        ' (docs/cli.md, "Start-up"); `kernel --help` shows what click\'s path costs.'
    )
    write_section("cli", "CLI: `kernel exec -- uptime`, whole process", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The console: the dashboard with 1000 servers x 5 services in the database (server render
time, and time until usable in Chromium), and a job on 50 hosts each printing 20 000 lines
(is the page still responsive while it streams, and how soon after a run's end is its last
line on the page). Targets: render < 150 ms, usable < 1 s, a click answered < 100 ms, the
last line within 1 s of the run's end.

Run: ``.venv/bin/python bench/bench_ui.py [--quick]``. Updates the ``ui`` section of
docs/benchmarks.md. A real ``kernel-server`` process (SQLite in a temporary data dir, no
status poller: the 1000 servers are rows, not machines) and, for the job, 50 real agent
processes on loopback addresses; Chromium is Debian's, driven by Playwright.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Error as PlaywrightError

from _report import table, write_section
from kernel.server.app import create_app
from kernel.server.components import components
from kernel.server.models.servers import Server
from kernel.server.models.status import HostStatus

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
AGENT = REPO / "src" / "kernel" / "agent.py"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
PASSWORD = "bench-password"
UNITS = [f"svc{i}.service" for i in range(5)]
LINES = 20000


def free_port(ip: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return int(s.getsockname()[1])


def catalogue(data: Path) -> None:
    for sub in ("init", "service"):
        (data / sub).mkdir(parents=True, exist_ok=True)
    for i, unit in enumerate(UNITS):
        d = data / "service" / f"svc{i}"
        d.mkdir()
        (d / "info.json").write_text(json.dumps({"description": f"service {i}", "unit": unit}))
        (d / "deploy.sh").write_text("true\n")
        (d / "remove.sh").write_text("true\n")


def fill(data: Path, n: int) -> None:
    """n servers with a probe each: facts, metrics and 5 unit states (no machine behind)."""
    app = create_app({"DATA_DIR": str(data), "TESTING": True, "SECRET_KEY": "bench"})
    words = ["active", "inactive", "failed"]
    with components(app).db.session() as s:
        for i in range(n):
            srv = Server(
                name=f"host{i:04}", agent_url=f"http://10.{i // 250}.{i % 250}.1:8001",
                agent_key="ab" * 32, state="online", tags=["web" if i % 2 else "db"],
                facts={}, description="",
            )  # fmt: skip
            s.add(srv)
            s.flush()
            st = HostStatus(server_id=srv.id, state="online", failures=0)
            st.facts = {"hostname": srv.name, "os_name": "Debian GNU/Linux 12 (bookworm)"}
            st.metrics = {
                "cpu_percent_interval": (i * 7) % 100, "mem_used": 2e9, "mem_total": 8e9,
                "disks": [{"mount": "/", "used": 40e9, "total": 100e9}], "load1": 0.5,
                "uptime": 86400 * 3,
            }  # fmt: skip
            st.units = {
                u: {"installed": (i + j) % 4 != 0, "active_state": words[(i + j) % 3]}
                for j, u in enumerate(UNITS)
            }
            st.warnings = []
            st.probed_at = dt.datetime.now(dt.UTC)
            s.add(st)
    components(app).db.dispose()


class KernelServer:
    def __init__(self, data: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ, "KERNEL_DATA_DIR": str(data), "KERNEL_LISTEN": f"127.0.0.1:{self.port}",
            "KERNEL_URL": self.url, "KERNEL_STATUS_POLLER": "false",
            "KERNEL_INSTALL_EXAMPLES": "false", "KERNEL_AGENT_NETWORKS": "127.0.0.0/8",
        }  # fmt: skip
        subprocess.run(
            [str(BIN / "kernel-server"), "create-user", "bench", "--role", "admin",
             "--password-stdin"],
            env=self.env, input=PASSWORD.encode() + b"\n", check=True, capture_output=True,
        )  # fmt: skip
        self.log = open(data / "server.log", "ab")
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
        r = httpx.post(self.url + "/api/v1/auth/token",
                       json={"username": "bench", "password": PASSWORD})  # fmt: skip
        r.raise_for_status()
        self.api = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {r.json()['token']}"},
            timeout=120,
        )  # fmt: skip

    def cpu(self) -> float:
        """CPU seconds (user + system) the server process has used so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.api.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.log.close()


def login(page: Any, base: str) -> None:
    page.goto(base + "/login")
    page.fill("input[name=username]", "bench")
    page.fill("input[name=password]", PASSWORD)
    page.click("#login-submit")
    page.wait_for_url(lambda url: "/login" not in url)


# -- the dashboard ------------------------------------------------------------------------------
def dashboard(browser: Any, reps: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="kernel-bench-ui-") as tmp:
        data = Path(tmp) / "data"
        catalogue(data)
        fill(data, 1000)
        srv = KernelServer(data)
        try:
            ctx = browser.new_context(viewport={"width": 1280, "height": 900})
            page = ctx.new_page()
            login(page, srv.url)
            cookies = {c["name"]: c["value"] for c in ctx.cookies()}
            html = {"Accept": "text/html"}
            with httpx.Client(base_url=srv.url, cookies=cookies, timeout=60) as c:
                c.get("/", headers=html)  # warm
                render, cpu = [], []
                for _ in range(reps):
                    c0 = srv.cpu()
                    t0 = time.perf_counter()
                    r = c.get("/", headers=html)
                    render.append(time.perf_counter() - t0)
                    cpu.append(srv.cpu() - c0)
                    assert r.status_code == 200 and r.text.count("data-server-id=") >= 1000
                size = len(r.content)
            usable, live, clicks = [], [], []
            for _ in range(reps):
                page.goto(srv.url + "/", wait_until="commit")
                t0 = time.perf_counter()
                page.wait_for_selector("#bulk input[name=servers]", state="attached")
                page.wait_for_load_state("load")
                nav = page.evaluate(
                    "() => { const n = performance.getEntriesByType('navigation')[0];"
                    " return [n.domContentLoadedEventEnd, n.loadEventEnd]; }"
                )
                usable.append(max(nav) / 1000)
                page.wait_for_selector("#live:not(.is-down)")  # the status stream's snapshot
                live.append(page.evaluate("() => performance.now()") / 1000)
                t1 = time.perf_counter()
                page.locator("#bulk input[name=servers]").nth(3).check()
                page.wait_for_function(
                    "() => document.getElementById('selected-count').textContent.startsWith('1')"
                )
                clicks.append(time.perf_counter() - t1)
                del t0
            ctx.close()
        finally:
            srv.stop()
    return {
        "render": statistics.median(render), "render_max": max(render), "size": size,
        "render_cpu": statistics.median(cpu),
        "usable": statistics.median(usable), "usable_max": max(usable),
        "live": statistics.median(live), "click": statistics.median(clicks),
    }  # fmt: skip


# -- a job on 50 hosts, 20 000 lines each ------------------------------------------------------
def start_agents(root: Path, n: int) -> list[tuple[subprocess.Popen[bytes], str, str]]:
    agents = []
    base = 30 + os.getpid() % 150
    for i in range(n):
        ip = f"127.{base}.{i // 250}.{i % 250 + 2}"
        port = free_port(ip)
        key = secrets.token_hex(32)
        state = root / f"agent{i}"
        state.mkdir(parents=True)
        (state / "key").write_text(key + "\n")
        proc = subprocess.Popen(
            [sys.executable, str(AGENT), "--listen", f"{ip}:{port}", "--key-file",
             str(state / "key"), "--state-dir", str(state / "state")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        agents.append((proc, f"http://{ip}:{port}", key))
    for _proc, url, _key in agents:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"agent {url} did not start") from None
                time.sleep(0.1)
    return agents


# Printed in 100 bursts with short pauses, so the job streams for a few seconds.
JOB = (
    f"for i in $(seq 0 99); do seq -f 'line %g of {LINES}' $((i*{LINES // 100}+1)) "
    f"$(((i+1)*{LINES // 100})); sleep 0.05; done"
)

OBSERVE = """() => {
  const save = (k, v) => sessionStorage.setItem(k, JSON.stringify(v));
  const tab = document.getElementById('tab-hosts');
  window.benchInput = [];
  tab.addEventListener('click', (e) => {
    const t = e.timeStamp;
    requestAnimationFrame(() => { window.benchInput.push(performance.now() - t);
                                  save('benchInput', window.benchInput); });
  });
  window.benchLag = 0;
  let due = performance.now() + 50;
  const lag = () => {
    window.benchLag = Math.max(window.benchLag, performance.now() - due);
    save('benchLag', window.benchLag);
    due = performance.now() + 50;
    setTimeout(lag, 50);
  };
  setTimeout(lag, 50);
  window.benchClicks = [];
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) if (e.name === 'click') window.benchClicks.push(e.duration);
    sessionStorage.setItem('benchClicks', JSON.stringify(window.benchClicks));
  }).observe({type: 'event', durationThreshold: 16, buffered: true});
  window.benchLast = {};
  const check = () => {
    for (const pane of document.querySelectorAll('[data-run]')) {
      const id = pane.dataset.run;
      const text = pane.querySelector('[data-out]').textContent;
      if (!window.benchLast[id] && text.includes('line 20000 of'))
        window.benchLast[id] = Date.now();
    }
    sessionStorage.setItem('benchLast', JSON.stringify(window.benchLast));
    requestAnimationFrame(check);
  };
  requestAnimationFrame(check);
}"""


def big_job(browser: Any, hosts: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="kernel-bench-ui-job-") as tmp:
        data = Path(tmp) / "data"
        for sub in ("init", "service"):
            (data / sub).mkdir(parents=True)
        agents = start_agents(Path(tmp), hosts)
        srv = KernelServer(data)
        try:
            for i, (_p, url, key) in enumerate(agents):
                body = {"name": f"h{i:02}", "agent_url": url, "agent_key": key}
                r = srv.api.post("/api/v1/servers", json=body)
                r.raise_for_status()
            ctx = browser.new_context(viewport={"width": 1280, "height": 900})
            page = ctx.new_page()
            login(page, srv.url)
            job = srv.api.post("/api/v1/jobs", json={"cmd": JOB, "targets": {"all": True}}).json()
            page.goto(f"{srv.url}/jobs/{job['id']}", wait_until="commit")
            page.wait_for_selector("#tab-hosts")
            page.evaluate(OBSERVE)
            round_trips = []
            box = page.locator("#tab-hosts").bounding_box()
            x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            t_end = time.monotonic() + 120
            # The page reloads itself when the job ends (the ended job's view): what is measured
            # is kept in sessionStorage, which outlives the reload.
            while time.monotonic() < t_end:
                if srv.api.get(f"/api/v1/jobs/{job['id']}").json()["state"] == "finished":
                    break
                try:
                    t0 = time.perf_counter()
                    page.mouse.click(x, y)  # a real click (input events) on a control
                    round_trips.append(time.perf_counter() - t0)
                except PlaywrightError:  # the reload at the end
                    break
                page.wait_for_timeout(150)
            page.wait_for_timeout(1500)
            page.wait_for_load_state("load")
            done = srv.api.get(f"/api/v1/jobs/{job['id']}").json()

            def stored(key: str, empty: str) -> Any:
                return json.loads(page.evaluate(f"() => sessionStorage.getItem('{key}')") or empty)

            last = stored("benchLast", "{}")
            clicks = stored("benchClicks", "[]")
            inputs = stored("benchInput", "[]")
            loop_lag = stored("benchLag", "0")
            lags = []
            for run in done["runs"]:
                end = dt.datetime.fromisoformat(run["finished_at"].replace("Z", "+00:00"))
                shown = last.get(run["id"])
                lags.append(None if shown is None else shown / 1000 - end.timestamp())
            ctx.close()
        finally:
            srv.stop()
            for proc, _url, _key in agents:
                proc.terminate()
            for proc, _url, _key in agents:
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
    known = [x for x in lags if x is not None]
    duration = (
        dt.datetime.fromisoformat(done["finished_at"].replace("Z", "+00:00"))
        - dt.datetime.fromisoformat(done["created_at"].replace("Z", "+00:00"))
    ).total_seconds()
    return {
        "hosts": hosts, "clicks": len(round_trips),
        "click_p50": statistics.median(round_trips) if round_trips else None,
        "click_max": max(round_trips) if round_trips else None,
        "event_max": max(clicks) / 1000 if clicks else 0.0,
        "input_p50": statistics.median(inputs) / 1000 if inputs else None,
        "input_max": max(inputs) / 1000 if inputs else None, "inputs": len(inputs),
        "loop_lag": loop_lag / 1000,
        "lag_max": max(known) if known else None, "missing": len(lags) - len(known),
        "duration": duration, "state": done["state"],
    }  # fmt: skip


def ms(v: float | None) -> str:
    return "—" if v is None else f"{v * 1000:.0f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, 10 hosts")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    load = os.getloadavg()[0]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        d = dashboard(browser, 3 if args.quick else 7)
        j = big_job(browser, 10 if args.quick else 50)
        browser.close()
    yes = lambda ok: "yes" if ok else "no"  # noqa: E731
    rows = [
        ["dashboard, 1000 servers x 5 services: server render (GET /, median; max)",
         f"{ms(d['render'])}; {ms(d['render_max'])} ({d['size'] // 1024} KiB)", "< 150 ms",
         yes(d["render"] < 0.150)],
        ["dashboard: the server's CPU time for that render (median)", ms(d["render_cpu"]),
         "", ""],
        ["dashboard: usable in Chromium (load event, median; max)",
         f"{ms(d['usable'])}; {ms(d['usable_max'])}", "< 1 s", yes(d["usable"] < 1.0)],
        ["dashboard: live (status stream's snapshot applied), from navigation", ms(d["live"]),
         "", ""],
        ["dashboard: a checkbox click answered (bulk count updated)", ms(d["click"]), "", ""],
        [f"job on {j['hosts']} hosts x {LINES} lines: a click answered while it streams "
         f"(input event to next frame in the page, median; max of {j['inputs']})",
         f"{ms(j['input_p50'])}; {ms(j['input_max'])}", "< 100 ms",
         yes(j["input_max"] is not None and j["input_max"] < 0.100)],
        ["job: clicks slower than 16 ms by the browser's Event Timing (slowest)",
         ms(j["event_max"]) if j["event_max"] else "none", "< 100 ms", yes(j["event_max"] < 0.1)],
        ["job: longest the page's event loop was late (a 50 ms timer)", ms(j["loop_lag"]), "", ""],
        ["job: last line on the page after its run ended (worst host)",
         ms(j["lag_max"]) + (f", {j['missing']} never" if j["missing"] else ""), "< 1 s",
         yes(j["lag_max"] is not None and j["lag_max"] < 1.0 and not j["missing"])],
        ["job: created to finished (server)", f"{j['duration']:.1f} s ({j['state']})", "", ""],
    ]  # fmt: skip
    body = (
        table(["what", "measured", "target", "met"], rows)
        + f"\n\nA real kernel-server process and Chromium {CHROMIUM} (headless) on this "
        f"machine; load average at start: {load:.1f}. The dashboard's 1000 servers are rows "
        "with a stored probe each (no poller); the job's hosts are real agent processes on "
        "loopback addresses, each printing its lines in 100 bursts 50 ms apart. A pane keeps "
        "400 lines in the page (the rest is a download); panes are redrawn at most every "
        "120 ms (off screen: about once a second), and at once when their run ends."
    )
    if load > 2 * (os.cpu_count() or 1):
        body += (
            f"\n\n**Busy machine:** the load average was {load:.1f} on {os.cpu_count()} CPUs "
            "(other people's tests), so wall times here are mostly waiting for a CPU; the "
            "server's CPU time per render is the figure that does not depend on it. Rerun on "
            "a quiet machine to check the targets."
        )
    write_section("ui", "Console: dashboard and a streaming job in Chromium", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Fixtures for the console's tests: a real ``kernel-server`` process, real agents on loopback
addresses (or full test hosts, in test_testbed.py), and Chromium driven by Playwright.

Playwright drives Debian's Chromium (``/usr/bin/chromium``, installed by scripts/install);
Playwright's own browser download is never used. Every page a test opens is watched: a
console error, a failed request for one of Kernel's files, or a dialog (``alert`` from an
injected script) fails the test at teardown.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
AGENT = REPO / "src" / "kernel" / "agent.py"
CHROMIUM = Path("/usr/bin/chromium")
KERNEL_SERVER = Path(sys.executable).parent / "kernel-server"
SCREENSHOTS = REPO / "docs" / "screenshots"
PASSWORD = "tester-password"
XSS = ("<script>alert(1)</script>", "<img src=x onerror=alert(1)>")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def free_port(ip: str) -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return int(s.getsockname()[1])


def loopback_ips(n: int) -> list[str]:
    """n addresses of 127.0.0.0/8 of this process's own (pytest processes run side by side)."""
    base = 10 + (os.getpid() % 200)
    return [f"127.{base}.{i // 250}.{i % 250 + 2}" for i in range(n)]


def eventually(fn: Callable[[], Any], timeout: float = 30.0, pause: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(pause)


class AgentProc:
    def __init__(self, ip: str, state_dir: Path, key: str | None = None) -> None:
        self.ip = ip
        self.port = free_port(ip)
        self.key = key or secrets.token_hex(32)
        self.state_dir = state_dir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.ip}:{self.port}"

    def start(self) -> AgentProc:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        key_file = self.state_dir.parent / f"{self.ip}-{self.port}.key"
        key_file.write_text(self.key + "\n")
        self.proc = subprocess.Popen(
            [sys.executable, str(AGENT), "--listen", f"{self.ip}:{self.port}",
             "--key-file", str(key_file), "--state-dir", str(self.state_dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            # Commands inherit it: $KERNEL_UI_HOST tells the hosts (all on this machine) apart.
            env={**os.environ, "KERNEL_UI_HOST": self.state_dir.name},
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=0.5).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"agent on {self.url} did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class ServerProc:
    """``kernel-server`` on a loopback port with users ``tester`` (admin), ``operator`` and
    ``viewer``, all with PASSWORD."""

    def __init__(self, data_dir: Path, host: str = "127.0.0.1", **env: str) -> None:
        self.data_dir = data_dir
        self.port = free_port(host)
        self.url = f"http://{host}:{self.port}"
        self.env = {
            **os.environ,
            "KERNEL_DATA_DIR": str(data_dir),
            "KERNEL_DATABASE_URL": f"sqlite:///{data_dir / 'kernel.db'}",
            "KERNEL_LISTEN": f"{host}:{self.port}",
            "KERNEL_URL": self.url,
            "KERNEL_AGENT_NETWORKS": "127.0.0.0/8",
            "KERNEL_RUN_START_TIMEOUT": "3",
            "KERNEL_AGENT_CONNECT_TIMEOUT": "2",
            "KERNEL_SSE_KEEPALIVE": "1",
            "KERNEL_STATUS_INTERVAL": "2",
            "KERNEL_INSTALL_EXAMPLES": "false",  # the examples would change this machine
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.token = ""

    def admin_cli(self, *args: str, stdin: str = "") -> None:
        subprocess.run(
            [str(KERNEL_SERVER), *args], env=self.env, input=stdin.encode(),
            capture_output=True, timeout=60, check=True,
        )  # fmt: skip

    def start(self) -> ServerProc:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for name, role in (("tester", "admin"), ("operator", "operator"), ("viewer", "viewer")):
            self.admin_cli(
                "create-user", name, "--role", role, "--password-stdin", stdin=PASSWORD + "\n"
            )
        with open(self.data_dir / "server.log", "ab") as log:
            self.proc = subprocess.Popen([str(KERNEL_SERVER)], env=self.env, stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=0.5).status_code == 200:
                    break
            except httpx.TransportError:
                assert self.proc.poll() is None, self.log()
                time.sleep(0.05)
        else:
            raise RuntimeError("kernel-server did not start")
        r = httpx.post(
            self.url + "/api/v1/auth/token", json={"username": "tester", "password": PASSWORD}
        )
        assert r.status_code == 201, r.text
        self.token = r.json()["token"]
        return self

    def log(self) -> str:
        return (self.data_dir / "server.log").read_text(errors="replace")

    def api(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, timeout=30, headers={"Authorization": f"Bearer {self.token}"}
        )

    def add_agent(self, name: str, agent: AgentProc, **fields: Any) -> dict[str, Any]:
        with self.api() as c:
            r = c.post(
                "/api/v1/servers",
                json={"name": name, "agent_url": agent.url, "agent_key": agent.key, **fields},
            )
            assert r.status_code == 201, r.text
            return r.json()["server"]  # type: ignore[no-any-return]

    def wait_job(self, job_id: int, timeout: float = 60) -> dict[str, Any]:
        with self.api() as c:

            def done() -> dict[str, Any] | None:
                job = c.get(f"/api/v1/jobs/{job_id}?output=1").json()
                return job if job["state"] in ("finished", "cancelled") else None

            return eventually(done, timeout)  # type: ignore[no-any-return]

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        assert "Traceback" not in self.log(), self.log()[-4000:]


def write_catalogue(data: Path) -> None:
    """Init scripts and services that change nothing on this machine (light agents run here)."""
    init = data / "init"
    init.mkdir(parents=True, exist_ok=True)
    (init / "10-hello.sh").write_text('echo "hello from $KERNEL_INIT_SCRIPT"\n')
    for name, description in (
        ("echoer", "only echoes"),
        ("xss", " ".join(XSS)),
    ):
        svc = data / "service" / name
        svc.mkdir(parents=True, exist_ok=True)
        unit = f"kernel-ui-test-{name}"
        (svc / "info.json").write_text(json.dumps({"description": description, "unit": unit}))
        (svc / "deploy.sh").write_text(f"echo deploying {name}\n")
        (svc / "remove.sh").write_text(f"echo removing {name}\n")
    broken = data / "service" / "broken"
    broken.mkdir(parents=True, exist_ok=True)
    (broken / "info.json").write_text("{not json")


# -- the browser ----------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium (scripts/install installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


class Watched:
    """A page with its console errors, failed requests and dialogs recorded."""

    def __init__(self, page: Any, base: str) -> None:
        self.page = page
        self.base = base
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        page.on("dialog", self._dialog)
        page.on("requestfailed", self._failed)

    def _console(self, msg: Any) -> None:
        if msg.type == "error":
            self.errors.append(f"console: {msg.text}")

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def _failed(self, request: Any) -> None:
        failure = request.failure or ""
        # An EventSource or a download closed when the page moves on is not an error.
        if "ERR_ABORTED" in failure or "/events" in request.url:
            return
        self.errors.append(f"request failed: {request.url} {failure}")

    def goto(self, path: str, **kw: Any) -> Any:
        return self.page.goto(self.base + path, **kw)

    def check(self) -> None:
        assert not self.dialogs, f"a dialog opened: {self.dialogs}"
        assert not self.errors, "\n".join(self.errors)


def login(w: Watched, user: str = "tester", password: str = PASSWORD) -> None:
    w.goto("/login")
    w.page.fill("input[name=username]", user)
    w.page.fill("input[name=password]", password)
    w.page.click("#login-submit")
    w.page.wait_for_url(lambda url: "/login" not in url)


@pytest.fixture
def new_page(browser: Any) -> Iterator[Callable[..., Watched]]:
    """``new_page(base_url, user=None, lang="en", width=1280)``: a fresh context (own cookies),
    logged in as ``user`` if given; checked for errors and dialogs at teardown."""
    made: list[tuple[Any, Watched]] = []

    def make(
        base: str,
        user: str | None = None,
        lang: str = "en",
        width: int = 1280,
        height: int = 860,
        dark: bool = False,
    ) -> Watched:
        ctx = browser.new_context(
            viewport={"width": width, "height": height},
            locale="zh-CN" if lang == "zh" else "en-US",
            extra_http_headers={"Accept-Language": "zh-CN,zh;q=0.9" if lang == "zh" else "en"},
            color_scheme="dark" if dark else "light",
            accept_downloads=True,
        )
        w = Watched(ctx.new_page(), base)
        made.append((ctx, w))
        if user:
            login(w, user)
        return w

    yield make
    for ctx, w in made:
        try:
            w.check()
        finally:
            ctx.close()


def screenshot(w: Watched, name: str, tmp_path: Path, full_page: bool = True) -> Path:
    """docs/screenshots/<name>.png with KERNEL_SCREENSHOTS=1 (the committed set), else tmp."""
    folder = SCREENSHOTS if os.environ.get("KERNEL_SCREENSHOTS") == "1" else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    w.page.screenshot(path=str(path), full_page=full_page)
    return path


def axe(w: Watched) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the current page (axe is one of the
    vendored files, loaded from Kernel itself as the CSP allows)."""
    if not w.page.evaluate("() => typeof window.axe !== 'undefined'"):
        w.page.add_script_tag(url="/ui/static/vendor/axe.min.js")
    result = w.page.evaluate(
        "async () => { const r = await axe.run(document, {resultTypes: ['violations']});"
        " return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,"
        " nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))})); }"
    )
    return [v for v in result if v["impact"] in ("serious", "critical")]

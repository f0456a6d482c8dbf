"""Fixtures for the server tests: an app on SQLite (and on PostgreSQL when KERNEL_TEST_PG_URL
is set), API clients per role, and real agent processes on loopback addresses."""

from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from kernel.server.app import create_app
from kernel.server.components import components

from .support import make_token

REPO = Path(__file__).resolve().parents[2]
AGENT = REPO / "src" / "kernel" / "agent.py"
PG_URL = os.environ.get("KERNEL_TEST_PG_URL")


# -- databases -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pg_module_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh PostgreSQL database for this test module (tables truncated per test)."""
    if not PG_URL:
        pytest.skip("KERNEL_TEST_PG_URL is not set (scripts/test starts PostgreSQL)")
    name = "kt_" + re.sub(r"\W", "_", request.module.__name__.split(".")[-1])[:40]
    name += f"_{os.getpid()}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        c.execute(text(f'CREATE DATABASE "{name}"'))
    yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'kernel.db'}"
    url: str = request.getfixturevalue("pg_module_url")
    engine = create_engine(url)
    with engine.begin() as c:
        tables = (
            c.execute(
                text(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                    "AND tablename <> 'alembic_version'"
                )
            )
            .scalars()
            .all()
        )
        if tables:
            c.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
    engine.dispose()
    return url


@pytest.fixture
def empty_db_url(db_url: str) -> str:
    """db_url with nothing in it (PostgreSQL: the module database's schema recreated)."""
    if db_url.startswith("postgresql"):
        engine = create_engine(db_url)
        with engine.begin() as c:
            c.execute(text("DROP SCHEMA public CASCADE"))
            c.execute(text("CREATE SCHEMA public"))
        engine.dispose()
    return db_url


def app_config(tmp_path: Path, db_url: str, **extra: Any) -> dict[str, Any]:
    data = tmp_path / "data"
    return {
        "TESTING": True,
        "DATA_DIR": str(data),
        "DATABASE_URL": db_url,
        "SECRET_KEY": "test-secret",
        "AGENT_NETWORKS": "127.0.0.0/8",  # tests never contact anything but loopback
        "RUN_START_TIMEOUT": 3.0,
        "AGENT_CONNECT_TIMEOUT": 2.0,
        "SSE_KEEPALIVE": 0.5,
        **extra,
    }


@pytest.fixture
def app(tmp_path: Path, db_url: str) -> Iterator[Any]:
    app = create_app(app_config(tmp_path, db_url))
    yield app
    components(app).runner.stop()
    components(app).db.dispose()


@pytest.fixture
def runner(app: Any) -> Any:
    r = components(app).runner
    r.start()
    return r


# -- users and clients ---------------------------------------------------------------------------
class Api:
    """A Flask test client that sends a bearer token and checks status codes."""

    def __init__(self, client: Any, token: str | None) -> None:
        self.client = client
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def call(self, method: str, url: str, expect: int | None = None, **kw: Any) -> Any:
        headers = {**self.headers, **kw.pop("headers", {})}
        resp = self.client.open(url, method=method, headers=headers, **kw)
        if expect is not None:
            assert resp.status_code == expect, (resp.status_code, resp.get_data(as_text=True))
        return resp

    def get(self, url: str, expect: int | None = 200, **kw: Any) -> Any:
        return self.call("GET", url, expect, **kw).get_json()

    def post(self, url: str, json: Any = None, expect: int | None = 200, **kw: Any) -> Any:
        return self.call("POST", url, expect, json=json, **kw).get_json()

    def patch(self, url: str, json: Any = None, expect: int | None = 200) -> Any:
        return self.call("PATCH", url, expect, json=json).get_json()

    def delete(self, url: str, expect: int | None = 200) -> Any:
        return self.call("DELETE", url, expect).get_json()


@pytest.fixture
def as_role(app: Any) -> Callable[[str], Api]:
    made: dict[str, Api] = {}

    def get(role: str) -> Api:
        if role not in made:
            made[role] = Api(app.test_client(), make_token(app, role + "1", role) if role else None)
        return made[role]

    return get


@pytest.fixture
def admin(as_role: Callable[[str], Api]) -> Api:
    return as_role("admin")


# -- real agents on loopback ---------------------------------------------------------------------
@dataclass
class AgentProc:
    ip: str
    port: int
    key: str
    state_dir: Path
    proc: subprocess.Popen[bytes] | None = None
    extra: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        scheme = "https" if "--tls-cert" in self.extra else "http"
        return f"{scheme}://{self.ip}:{self.port}"

    def start(self) -> None:
        key_file = self.state_dir.parent / f"{self.ip}-{self.port}.key"
        key_file.write_text(self.key + "\n")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(AGENT),
                "--listen",
                f"{self.ip}:{self.port}",
                "--key-file",
                str(key_file),
                "--state-dir",
                str(self.state_dir),
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                r = httpx.get(self.url + "/healthz", timeout=0.5, verify=False)
                if r.status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"agent on {self.url} did not start")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)

    def freeze(self) -> None:
        assert self.proc
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def free_port(ip: str) -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return int(s.getsockname()[1])


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[Callable[..., list[AgentProc]]]:
    """Factory: ``agents(n)`` starts n agents on 127.0.0.<x> addresses."""
    started: list[AgentProc] = []

    def make(n: int, *extra: str) -> list[AgentProc]:
        out = []
        for _ in range(n):
            ip = f"127.0.0.{len(started) + 11}"
            state = tmp_path / f"agent-{ip}"
            state.mkdir()
            a = AgentProc(ip, free_port(ip), secrets.token_hex(32), state, extra=extra)
            a.start()
            started.append(a)
            out.append(a)
        return out

    yield make
    for a in started:
        a.stop()


def wait_job(api: Api, job_id: int, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = api.get(f"/api/v1/jobs/{job_id}?output=1")
        if job["state"] in ("finished", "cancelled"):
            return job  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} did not end: {job}")
        time.sleep(0.05)


def add_agent_server(
    api: Api, agent: AgentProc, name: str, tags: list[str] | None = None
) -> dict[str, Any]:
    body = api.post(
        "/api/v1/servers",
        {"name": name, "agent_url": agent.url, "agent_key": agent.key, "tags": tags or []},
        expect=201,
    )
    return body["server"]  # type: ignore[no-any-return]


# -- the real server process ---------------------------------------------------------------------
KERNEL_SERVER = Path(sys.executable).parent / "kernel-server"


class ServerProc:
    """``kernel-server`` as a subprocess on a loopback port, for restart and streaming tests."""

    def __init__(self, data_dir: Path, db_url: str, host: str = "127.0.0.1", **env: str) -> None:
        self.data_dir = data_dir
        self.port = free_port(host)
        self.url = f"http://{host}:{self.port}"
        self.env = {
            **os.environ,
            "KERNEL_DATA_DIR": str(data_dir),
            "KERNEL_DATABASE_URL": db_url,
            "KERNEL_LISTEN": f"{host}:{self.port}",
            "KERNEL_URL": self.url,
            "KERNEL_AGENT_NETWORKS": "127.0.0.0/8",
            "KERNEL_RUN_START_TIMEOUT": "3",
            "KERNEL_INSTALL_EXAMPLES": "false",  # their init scripts would change this machine
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.token = ""

    def cli(self, *args: str, stdin: str = "") -> str:
        out = subprocess.run(
            [str(KERNEL_SERVER), *args],
            env=self.env,
            input=stdin.encode(),
            capture_output=True,
            timeout=60,
            check=True,
        )
        return out.stdout.decode()

    def start(self) -> None:
        with open(self.data_dir / "server.log", "ab") as log:
            self.proc = subprocess.Popen([str(KERNEL_SERVER)], env=self.env, stdout=log, stderr=log)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=0.5).status_code == 200:
                    return
            except httpx.TransportError:
                assert self.proc.poll() is None, (self.data_dir / "server.log").read_text()
                time.sleep(0.05)
        raise RuntimeError("kernel-server did not start")

    def login(self) -> str:
        self.cli(
            "create-user",
            "tester",
            "--role",
            "admin",
            "--password-stdin",
            stdin="tester-password\n",
        )
        r = httpx.post(
            self.url + "/api/v1/auth/token",
            json={"username": "tester", "password": "tester-password"},
        )
        assert r.status_code == 201, r.text
        self.token = r.json()["token"]
        return self.token

    def api(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, timeout=10, headers={"Authorization": f"Bearer {self.token}"}
        )

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def server_proc(tmp_path: Path, db_url: str) -> Iterator[ServerProc]:
    data = tmp_path / "server-data"
    data.mkdir()
    srv = ServerProc(data, db_url)
    yield srv
    srv.stop()

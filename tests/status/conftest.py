"""Fixtures for the services/status tests: an app from create_app, API clients per role,
servers added straight into the inventory (no enrollment), and a cheroot server for e2e tests
that hosts must reach."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cheroot import wsgi
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from kernel.server.app import create_app
from kernel.server.components import components
from kernel.server.core.datadir import EXAMPLES_DIR
from kernel.server.core.db import utcnow
from kernel.server.models.servers import Server
from server.support import make_token

EXAMPLES = EXAMPLES_DIR


def make_app(data_dir: Path, **extra: Any) -> Any:
    app = create_app(
        {
            "TESTING": True,
            "DATA_DIR": str(data_dir),
            "SECRET_KEY": "status-test-secret",
            "AGENT_NETWORKS": None,
            "RUN_START_TIMEOUT": 3.0,
            "AGENT_CONNECT_TIMEOUT": 2.0,
            "STATUS_POLLER": True,
            **extra,
        }
    )
    return app


def close_app(app: Any) -> None:
    components(app).runner.stop()
    components(app).poller.stop()
    components(app).db.dispose()


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Any]:
    app = make_app(tmp_path / "data")
    yield app
    close_app(app)


class Api:
    """A client sending a bearer token, checking status codes."""

    def __init__(self, client: Any, token: str) -> None:
        self.client = client
        self.headers = {"Authorization": f"Bearer {token}"}

    def call(self, method: str, url: str, expect: int | None, **kw: Any) -> Any:
        resp = self.client.request(method, url, headers=self.headers, **kw)
        code = getattr(resp, "status_code", None)
        if expect is not None:
            assert code == expect, (code, resp.text)
        return resp

    def get(self, url: str, expect: int | None = 200, **kw: Any) -> Any:
        return self.call("GET", url, expect, **kw).json()

    def post(self, url: str, json: Any = None, expect: int | None = 200, **kw: Any) -> Any:
        return self.call("POST", url, expect, json=json, **kw).json()


class FlaskClient:
    """The Flask test client with httpx-like answers (``.json()``, ``.text``)."""

    def __init__(self, app: Any) -> None:
        self.client = app.test_client()

    def request(self, method: str, url: str, **kw: Any) -> Any:
        return Answer(self.client.open(url, method=method, **kw))


class Answer:
    def __init__(self, resp: Any) -> None:
        self.status_code = resp.status_code
        self.text = resp.get_data(as_text=True)
        self.headers = resp.headers
        self._resp = resp

    def json(self) -> Any:
        return self._resp.get_json()


@pytest.fixture
def as_role(app: Any) -> Callable[[str], Api]:
    made: dict[str, Api] = {}

    def get(role: str) -> Api:
        if role not in made:
            made[role] = Api(FlaskClient(app), make_token(app, role + "1", role))
        return made[role]

    return get


def wait_for(pred: Callable[[], Any], timeout: float, step: float = 0.1) -> Any:
    """Poll ``pred`` until it gives something true (returned), or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(step)
    raise AssertionError(f"not within {timeout} s")


def add_server(app: Any, name: str, url: str, key: str) -> int:
    """A joined server, straight into the inventory (no environment check, no init)."""
    with components(app).db.session() as s:
        srv = Server(
            name=name,
            agent_url=url,
            agent_key=key,
            state="online",
            tags=[],
            facts={},
            description="",
            last_seen=utcnow(),
        )
        s.add(srv)
        s.flush()
        return srv.id


class Served:
    """The app served by cheroot on a real address, with an httpx API client."""

    def __init__(self, app: Any, host: str) -> None:
        self.server: Any = wsgi.Server((host, 0), app, numthreads=16)
        self.server.prepare()
        port = self.server.bind_addr[1]
        self.url = f"http://{host}:{port}"
        app.config["URL"] = app.config["KERNEL_URL"] = self.url
        self.thread = threading.Thread(target=self.server.serve, daemon=True)
        self.thread.start()

    def api(self, token: str) -> Api:
        return Api(httpx.Client(base_url=self.url, timeout=30), token)

    def stop(self) -> None:
        self.server.stop()
        self.thread.join(10)


PG_URL = os.environ.get("KERNEL_TEST_PG_URL")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str | None]:
    """None (SQLite in the data dir), or a fresh PostgreSQL database for this test."""
    if request.param == "sqlite":
        yield None
        return
    if not PG_URL:
        pytest.skip("KERNEL_TEST_PG_URL is not set (scripts/test starts PostgreSQL)")
    name = f"ks_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()

"""Fixtures for the services/status tests: an app from create_app, API clients per role,
servers added straight into the inventory (no enrollment), and the app served on a real
address for e2e tests that hosts must reach. Databases come from the shared harness."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kernel.server.app import create_app
from kernel.server.components import components
from kernel.server.core.datadir import EXAMPLES_DIR
from kernel.server.core.db import utcnow
from kernel.server.models.servers import Server
from kernel.server.wsgi_server import Server as HttpServer
from support.api import Api, make_token

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


@pytest.fixture
def as_role(app: Any) -> Callable[[str], Api]:
    made: dict[str, Api] = {}

    def get(role: str) -> Api:
        if role not in made:
            made[role] = Api(app.test_client(), make_token(app, role + "1", role))
        return made[role]

    return get


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
    """The app served by Kernel's own HTTP server (waitress) on a real address, with an httpx
    API client: for hosts in the test bed that must reach it."""

    def __init__(self, app: Any, host: str) -> None:
        self.server = HttpServer(app, host, 0)
        self.url = f"http://{host}:{self.server.port}"
        app.config["URL"] = self.url
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()

    def api(self, token: str) -> Api:
        return Api(httpx.Client(base_url=self.url, timeout=30), token)

    def stop(self) -> None:
        self.server.close()
        self.thread.join(10)

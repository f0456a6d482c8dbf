"""Fixtures for the alerts tests: an app (SQLite, and PostgreSQL when scripts/test started
one), servers and their status written straight into the tables the poller writes, a real
HTTP sink and a real SMTP server (aiosmtpd) on loopback that receive the notifications."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from kernel.server.app import create_app
from kernel.server.components import components
from kernel.server.core.db import utcnow
from kernel.server.models.servers import Server
from kernel.server.models.status import HostStatus
from support.api import Api, make_token
from support.procs import free_port
from support.servers import app_config


@pytest.fixture
def app(tmp_path: Path, db_url: str) -> Iterator[Any]:
    app = create_app(app_config(tmp_path, db_url, ALERTS_SEND_TIMEOUT=3.0,
                                ALERTS_RETRY_AFTER=0.2))  # fmt: skip
    yield app
    components(app).close()


@pytest.fixture
def as_role(app: Any) -> Callable[[str], Api]:
    made: dict[str, Api] = {}

    def get(role: str) -> Api:
        if role not in made:
            made[role] = Api(app.test_client(), make_token(app, role + "1", role))
        return made[role]

    return get


@pytest.fixture
def admin(as_role: Callable[[str], Api]) -> Api:
    return as_role("admin")


def add_host(
    app: Any,
    name: str,
    *,
    tags: list[str] | None = None,
    state: str = "online",
    last_ok_at: float | None = None,
    metrics: dict[str, Any] | None = None,
    units: dict[str, Any] | None = None,
) -> int:
    """A joined server and its status row, as the poller would have written them."""
    with components(app).db.session() as s:
        srv = Server(name=name, agent_url="http://127.0.0.1:9", agent_key="k" * 64,
                     state="online", tags=tags or [], facts={}, description="")  # fmt: skip
        s.add(srv)
        s.flush()
        s.add(
            HostStatus(
                server_id=srv.id, state=state, failures=0, facts={},
                metrics=metrics or {}, units=units or {}, warnings=[],
                last_ok_at=dt.datetime.fromtimestamp(last_ok_at or time.time(), dt.UTC),
                probed_at=utcnow(),
            )
        )  # fmt: skip
        return srv.id


def set_status(app: Any, server_id: int, **values: Any) -> None:
    with components(app).db.session() as s:
        st = s.get(HostStatus, server_id)
        assert st is not None
        for k, v in values.items():
            if k == "last_ok_at" and isinstance(v, float):
                v = dt.datetime.fromtimestamp(v, dt.UTC)
            setattr(st, k, v)


def unit(active_state: str, sub_state: str = "", installed: bool = True) -> dict[str, Any]:
    return {
        "unit": "u", "load_state": "loaded" if installed else "not-found",
        "active_state": active_state, "sub_state": sub_state, "unit_file_state": "enabled",
        "installed": installed, "active": active_state == "active",
        "failed": active_state == "failed",
    }  # fmt: skip


# -- receivers ----------------------------------------------------------------------------------
class Sink:
    """A JSON webhook receiver on loopback (apprise's json:// posts here). ``status`` is what
    it answers; ``stop()`` takes it down (connections refused)."""

    def __init__(self) -> None:
        self.got: list[dict[str, Any]] = []
        self.status = 200
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {"raw": raw.decode("utf-8", "replace")}
                sink.got.append({"path": self.path, "body": body})
                self.send_response(sink.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "/hook") -> str:
        return f"json://127.0.0.1:{self.port}{path}"

    def titles(self) -> list[str]:
        return [str(m["body"].get("title")) for m in self.got]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def sink() -> Iterator[Sink]:
    s = Sink()
    yield s
    s.stop()


class Mailbox:
    """A real SMTP server (aiosmtpd) on loopback, keeping what it receives."""

    def __init__(self) -> None:
        self.got: list[tuple[str, list[str], str]] = []
        box = self

        class Handler:
            async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
                box.got.append((envelope.mail_from, list(envelope.rcpt_tos),
                                envelope.content.decode("utf-8", "replace")))  # fmt: skip
                return "250 OK"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def url(self) -> str:
        return f"mailto://127.0.0.1:{self.port}?from=kernel@example.com&to=ops@example.com"

    def stop(self) -> None:
        self.controller.stop()


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    m = Mailbox()
    yield m
    m.stop()

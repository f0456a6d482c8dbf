"""Fixtures for the alerts tests: an app (SQLite, and PostgreSQL when scripts/test started
one), servers and their status written straight into the tables the poller writes, and the
receivers of notifications (support/receivers.py: an HTTP sink, an SMTP server)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kernel.server.app import create_app
from kernel.server.components import components
from kernel.server.core.db import utcnow
from kernel.server.models.servers import Server
from kernel.server.models.status import HostStatus
from support.api import Api, make_token
from support.receivers import Mailbox, Sink
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
@pytest.fixture
def sink() -> Iterator[Sink]:
    s = Sink()
    yield s
    s.stop()


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    m = Mailbox()
    yield m
    m.stop()

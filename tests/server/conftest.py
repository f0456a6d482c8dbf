"""Fixtures for the server tests: an app (on SQLite, and on PostgreSQL when scripts/test
started one: the shared `db_url`), API clients per role, and servers added for real agents.
Agents, servers and databases come from the shared harness (tests/support)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kernel.server.app import create_app
from kernel.server.components import components
from support.agents import Agent
from support.api import Api, make_token
from support.servers import app_config


@pytest.fixture
def app(tmp_path: Path, db_url: str) -> Iterator[Any]:
    app = create_app(app_config(tmp_path, db_url))
    yield app
    components(app).close()


@pytest.fixture
def runner(app: Any) -> Iterator[Any]:
    r = components(app).runner
    r.start()
    yield r
    r.stop()  # started by hand, so not stopped by the app's components.close()


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


def add_agent_server(
    api: Api, agent: Agent, name: str, tags: list[str] | None = None
) -> dict[str, Any]:
    body = api.post(
        "/api/v1/servers",
        {"name": name, "agent_url": agent.url, "agent_key": agent.key, "tags": tags or []},
        expect=201,
    )
    return body["server"]  # type: ignore[no-any-return]

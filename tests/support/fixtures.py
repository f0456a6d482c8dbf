"""The shared fixtures (a pytest plugin, registered in tests/conftest.py): databases (SQLite,
and PostgreSQL when scripts/test started one), agent processes, a real server process."""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from support.agents import Agent
from support.procs import free_port
from support.servers import ServerProc

PG_URL = os.environ.get("KERNEL_TEST_PG_URL")


# -- databases ----------------------------------------------------------------------------------
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
    """Each test runs on SQLite and again on PostgreSQL (its module's database, emptied)."""
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


# -- agents -------------------------------------------------------------------------------------
@pytest.fixture
def agent_factory(tmp_path: Path) -> Iterator[Callable[..., Agent]]:
    """``agent_factory(*flags, host=…, key=…, start=True)``: an agent process; at the end each
    must still answer and leave no process behind."""
    made: list[Agent] = []

    def make(*extra: str, start: bool = True, **kw: Any) -> Agent:
        d = tmp_path / f"agent{len(made)}"
        d.mkdir()
        port = kw.pop("port", None) or free_port(kw.get("host", "127.0.0.1"))
        a = Agent(d, port, extra=list(extra), **kw)
        made.append(a)
        if start:
            a.start()
        return a

    yield make
    problems = []
    for a in made:
        if a.proc is not None and a.proc.poll() is None and not a.healthy():
            problems.append(f"agent on port {a.port} stopped answering")
        leftovers = a.teardown()
        if leftovers:
            problems.append(f"processes left behind by agent on port {a.port}: {leftovers}")
    assert not problems, problems


@pytest.fixture
def agent(agent_factory: Callable[..., Agent]) -> Agent:
    return agent_factory()


@pytest.fixture
def agents(agent_factory: Callable[..., Agent]) -> Callable[..., list[Agent]]:
    """``agents(n, *flags)``: n agents, each on its own loopback address (127.0.0.11, …) and
    with its own key, as separate hosts look to the server."""
    count = [0]

    def make(n: int, *extra: str) -> list[Agent]:
        out = []
        for _ in range(n):
            count[0] += 1
            out.append(agent_factory(*extra, host=f"127.0.0.{10 + count[0]}",
                                     key=secrets.token_hex(32)))  # fmt: skip
        return out

    return make


# -- the server ---------------------------------------------------------------------------------
@pytest.fixture
def server_proc(tmp_path: Path, db_url: str) -> Iterator[ServerProc]:
    data = tmp_path / "server-data"
    data.mkdir()
    srv = ServerProc(data, db_url)
    yield srv
    srv.stop()

"""The database: engine, sessions and the declarative base (SQLAlchemy 2).

SQLite is the embedded default (WAL, foreign keys, a busy timeout, and ``BEGIN IMMEDIATE`` so
two writers queue on the lock instead of failing with "database is locked" halfway through a
transaction). PostgreSQL is selected by URL. Migrations live in ``migrations/`` (Alembic) and run
on the app's own engine.
"""

from __future__ import annotations

import datetime as dt
import errno
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, Engine, MetaData, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

READ_ONLY = "kernel_read_only"  # execution option: begin a deferred (reading) transaction
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(dt.UTC).replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        _tune_sqlite(engine)
        return engine
    return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'kernel.db'}"


def _tune_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event decide how transactions start (see below).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # IMMEDIATE takes the write lock up front: a deferred transaction that later writes can
        # fail with SQLITE_BUSY without waiting, which busy_timeout cannot fix. Read-only
        # sessions (Database.reading) begin deferred: in WAL mode they neither wait for nor
        # hold up a writer.
        if conn.get_execution_options().get(READ_ONLY):
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")


SQLITE_FULL = 13  # the primary result code (extended codes keep it in the low byte)
PG_DISK_FULL = "53100"  # SQLSTATE disk_full ("could not extend file …: No space left on device")
_FULL_TEXTS = ("database or disk is full", "could not extend file", "no space left on device")


def out_of_space(err: BaseException) -> bool:
    """Whether an error (a SQLAlchemy one, the driver's, or an OSError) says the disk is full:
    SQLite's SQLITE_FULL, PostgreSQL's disk_full, ENOSPC or EDQUOT. The texts are the fallback
    for a driver that sets no code."""
    orig = getattr(err, "orig", None) or err
    code = getattr(orig, "sqlite_errorcode", None)
    if isinstance(code, int) and code & 0xFF == SQLITE_FULL:
        return True
    if getattr(orig, "sqlstate", None) == PG_DISK_FULL:
        return True
    if isinstance(orig, OSError) and orig.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(orig).lower()
    return any(t in text for t in _FULL_TEXTS)


class Database:
    """An engine and its session factory; one per app (``app.extensions["kernel.db"]``)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.url_shown = make_url(url).render_as_string(hide_password=True)
        self.engine = make_engine(url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._readers = sessionmaker(
            self.engine.execution_options(**{READ_ONLY: True}), expire_on_commit=False
        )

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session whose transaction commits on success and rolls back on error."""
        with self.sessions() as s, s.begin():
            yield s

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A session for reads only (on SQLite a deferred transaction that takes no write
        lock; it must not write: a write there could fail at once with "database is locked").
        Ends with a commit of nothing, which, unlike a rollback, leaves loaded objects usable."""
        with self._readers() as s, s.begin():
            yield s

    def dispose(self) -> None:
        self.engine.dispose()

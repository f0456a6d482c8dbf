"""Accessors for the per-app and per-request objects views use (database, session, runner)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import current_app, g
from sqlalchemy.orm import Session

from .db import Database

if TYPE_CHECKING:
    from .events import EventBus
    from .runner import Runner


def db() -> Database:
    return current_app.extensions["kernel.db"]


def session() -> Session:
    """The request's session; views commit it explicitly, teardown closes (rolls back) it."""
    if "db_session" not in g:
        g.db_session = db().sessions()
    return g.db_session


def close_session(_exc: BaseException | None = None) -> None:
    s = g.pop("db_session", None)
    if s is not None:
        s.close()


def bus() -> EventBus:
    return current_app.extensions["kernel.events"]


def runner() -> Runner:
    return current_app.extensions["kernel.runner"]

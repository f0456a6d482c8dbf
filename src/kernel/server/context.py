"""Accessors for the per-app and per-request objects views use (database, session, runner),
and `server_joined`, what every way of joining a server ends with."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Flask, current_app, g
from sqlalchemy.orm import Session

from .db import Database

if TYPE_CHECKING:
    from .events import EventBus
    from .runner import Runner

POLLER = "kernel.poller"  # app.extensions key of the status poller (when it runs here)


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


def server_joined(server_id: int, app: Flask | None = None) -> None:
    """A server has (new) agent details, committed: queued init scripts start (the runner is
    woken) and its status is probed now rather than at the next round (the poller, if it
    runs in this process), so a new server does not show "unknown" for an interval."""
    extensions = (app or current_app).extensions
    extensions["kernel.runner"].wake()
    poller = extensions.get(POLLER)
    if poller is not None:
        poller.refresh([server_id])

"""What a request works with: the process's components (components.py) and the request's own
database session, which views commit explicitly and teardown closes (rolling back)."""

from __future__ import annotations

from flask import g
from sqlalchemy.orm import Session

from kernel.server.alerts.service import AlertService
from kernel.server.cluster.membership import Membership
from kernel.server.components import Components, components
from kernel.server.core.db import Database
from kernel.server.core.events import EventBus
from kernel.server.inventory.tlspin import ServerPin
from kernel.server.jobs.runner import Runner
from kernel.server.services.cache import CatalogueCache
from kernel.server.status.poller import Poller

__all__ = [
    "Components", "alerts", "bus", "catalogue", "components", "db", "install_pin", "membership",
    "poller",
    "runner", "session",
]  # fmt: skip


def db() -> Database:
    return components().db


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
    return components().bus


def runner() -> Runner:
    return components().runner


def poller() -> Poller:
    return components().poller


def membership() -> Membership:
    return components().membership


def alerts() -> AlertService:
    return components().alerts


def catalogue() -> CatalogueCache:
    return components().catalogue


def install_pin(base: str) -> ServerPin | None:
    """The TLS pin an install one-liner to ``base`` carries (inventory/tlspin.py)."""
    return components().pins.for_url(base)


def server_joined(server_id: int) -> None:
    """A server has (new) agent details, committed: see `Components.joined`."""
    components().joined(server_id)

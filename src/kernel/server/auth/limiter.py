"""The login rate limit: failed logins counted per user name (from any address) and per
source address (for any name) in a sliding window, in the database — so parallel attempts
cannot race past it, attempts spread over addresses still count against the name, and every
replica counts the same ones.

An attempt is recorded *before* its password is checked (`attempt`), in a transaction that
first takes the limiter's lock (SQLite: the write lock of BEGIN IMMEDIATE; PostgreSQL: a
transaction advisory lock), and is removed only when the login succeeds (`succeeded`).
The price: anyone can lock a user name out for a window by failing on purpose; the window is
short (LOGIN_WINDOW) and an admin can still log in with an API token.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import delete, func, select, text

from kernel.exceptions import RateLimited
from kernel.server.core.db import Database, utcnow
from kernel.server.models.users import LoginFailure

SOURCE_FACTOR = 4  # one address may fail this many times the per-name limit (a name spray)
_LOCK = 0x4B65726E656C4C  # "KernelL": the advisory lock all login attempts take in turn


def retry_after(
    by_name: Sequence[float], by_source: Sequence[float], now: float, limit: int, window: float
) -> float:
    """Seconds until one more attempt may be made (0: now), from the times of the failures in
    the window for this name and for this source (pure)."""
    waits = [0.0]
    for times, allowed in ((by_name, limit), (by_source, limit * SOURCE_FACTOR)):
        recent = sorted(t for t in times if t > now - window)
        if len(recent) >= allowed:
            # the oldest that must leave the window before there is room again
            waits.append(recent[len(recent) - allowed] + window - now)
    return max(waits)


class LoginLimiter:
    def __init__(self, db: Database, max_failures: int, window: float) -> None:
        self.db = db
        self.max_failures = max_failures
        self.window = window

    def attempt(self, name: str, source: str) -> None:
        """Count an attempt of ``name`` from ``source``, or RateLimited if there is no room."""
        key, source = name.lower()[:64], source[:64]
        now = utcnow()
        cut = now - dt.timedelta(seconds=self.window)
        with self.db.session() as s:
            if s.bind is not None and s.bind.dialect.name == "postgresql":
                s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK})
            s.execute(delete(LoginFailure).where(LoginFailure.at <= cut))
            rows = s.execute(
                select(LoginFailure.name, LoginFailure.source, LoginFailure.at).where(
                    (LoginFailure.name == key) | (LoginFailure.source == source)
                )
            ).all()
            wait = retry_after(
                [r.at.timestamp() for r in rows if r.name == key],
                [r.at.timestamp() for r in rows if r.source == source],
                now.timestamp(),
                self.max_failures,
                self.window,
            )
            if wait > 0:
                seconds = int(wait) + 1
                raise RateLimited(
                    f"too many failed logins; try again in {seconds} s", retry_after=seconds
                )
            s.add(LoginFailure(name=key, source=source, at=now))

    def succeeded(self, name: str) -> None:
        """The password was right: this name's failures are forgiven."""
        with self.db.session() as s:
            s.execute(delete(LoginFailure).where(LoginFailure.name == name.lower()[:64]))

    def failures(self, name: str) -> int:
        with self.db.reading() as s:
            count = s.scalar(
                select(func.count()).select_from(LoginFailure).where(LoginFailure.name == name)
            )
        return int(count or 0)

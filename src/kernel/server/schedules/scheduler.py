"""The scheduler: a background loop (core/loopthread.py) that sleeps until the next planned
time of any schedule, fires what is due (firing.py) and sleeps again.

It wakes early when a schedule is created or edited in this process (`wake`), and at least
every IDLE_POLL seconds, for schedules changed by another replica. It holds nothing the
database does not: a restarted (or second) scheduler picks up where the database says.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable, Mapping
from typing import Any

from kernel.server.core.db import Database, utcnow
from kernel.server.core.loopthread import LoopThread
from kernel.server.schedules.firing import Admitting, fire_due

log = logging.getLogger(__name__)
IDLE_POLL = 10.0  # seconds between looks for schedules changed elsewhere
RETRY = 5.0  # seconds before trying again when the database failed


class Scheduler(LoopThread):
    name = "kernel-scheduler"

    def __init__(
        self,
        config: Mapping[str, Any],
        db: Database,
        runner: Admitting,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        super().__init__()
        self.db = db
        self.runner = runner
        self.grace = float(config["SCHEDULE_GRACE"])
        self.clock = clock
        self.rounds = 0  # how often it looked (tests wait on it)

    def wake(self) -> None:
        """Look again now (a schedule was created, edited or enabled)."""
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self._wake.set)

    def _prepare(self) -> None:
        self._wake = asyncio.Event()

    async def _main(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()  # before looking: a change made meanwhile wakes us again
            try:
                ahead = await self._db(self._round)
                wait = IDLE_POLL
                if ahead is not None:
                    wait = min(IDLE_POLL, max(0.0, (ahead - self.clock()).total_seconds()))
            except Exception:  # the database is down, …: keep trying, loudly
                log.exception("the scheduler cannot read the database; retrying")
                wait = RETRY
            waiters = [
                asyncio.ensure_future(self._wake.wait()),
                asyncio.ensure_future(self._stopping.wait()),
            ]
            try:
                # A little past the planned time, so the clock has reached it when we look.
                await asyncio.wait(
                    waiters, timeout=wait + 0.01, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for w in waiters:
                    w.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await w

    def _round(self) -> dt.datetime | None:
        ahead = fire_due(self.db, self.runner, now=self.clock(), grace=self.grace)
        self.rounds += 1
        return ahead

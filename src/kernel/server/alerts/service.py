"""The alerts background service: every ALERTS_INTERVAL one evaluation round (evaluate.py)
and then the outbox's delivery (delivery.py), in one asyncio loop with one database thread
(core/loopthread.py) and a few sender threads (apprise is blocking). It reads the database
only — never the poller's memory — so it runs unchanged beside other replicas'."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import delete

from kernel.server.alerts import channels, delivery
from kernel.server.alerts.evaluate import evaluate
from kernel.server.core.db import Database
from kernel.server.core.loopthread import LoopThread
from kernel.server.models.alerts import Alert, AlertNotification

log = logging.getLogger(__name__)
SENDERS = 4  # messages in flight at once
PRUNE_EVERY = 3600.0


class AlertService(LoopThread):
    name = "kernel-alerts"

    def __init__(
        self, config: Mapping[str, Any], db: Database, units: Callable[[], Mapping[str, str]]
    ) -> None:
        super().__init__()
        self.db = db
        self.units = units  # the catalogue's units: unit → service name
        self.interval = float(config["ALERTS_INTERVAL"])
        self.send_timeout = float(config["ALERTS_SEND_TIMEOUT"])
        self.attempts = int(config["ALERTS_SEND_ATTEMPTS"])
        self.retry_after = float(config["ALERTS_RETRY_AFTER"])
        self.keep = float(config["ALERTS_KEEP"])
        # Load samples further apart than this mean the host was not answering.
        self.max_gap = max(10.0, 3 * float(config["STATUS_INTERVAL"]))
        url = str(config.get("URL") or "").rstrip("/")
        self.link: Callable[[int], str | None] = (
            (lambda aid: f"{url}/api/v1/alerts/{aid}") if url else (lambda _aid: None)
        )
        self.last_round: dict[str, Any] = {}
        self._senders: ThreadPoolExecutor | None = None

    # -- called from other threads ------------------------------------------------------------
    def wake(self) -> bool:
        """Run a round now (e.g. after a rule changed); False if not running."""
        loop = self._loop
        if loop is None:
            return False
        loop.call_soon_threadsafe(self._wakeup.set)
        return True

    def round_now(self, timeout: float = 60.0) -> dict[str, Any]:
        """Evaluate and deliver, waiting for it (tests)."""
        assert self._loop is not None, "the alerts service is not running"
        return asyncio.run_coroutine_threadsafe(self._round(), self._loop).result(timeout)

    # -- the loop ---------------------------------------------------------------------------------
    def _prepare(self) -> None:
        self._wakeup = asyncio.Event()
        self._senders = ThreadPoolExecutor(SENDERS, thread_name_prefix="kernel-alerts-out")
        self._lock = asyncio.Lock()

    async def _close(self) -> None:
        if self._senders is not None:
            self._senders.shutdown(wait=False, cancel_futures=True)

    async def _main(self) -> None:
        next_prune = time.monotonic() + 60.0
        while not self._stopping.is_set():
            started = time.monotonic()
            self._wakeup.clear()  # a wake-up during the round brings the next one forward
            try:
                await self._round()
            except Exception:
                log.exception("an alerts round failed; trying again next interval")
            if started >= next_prune:
                next_prune = started + PRUNE_EVERY
                try:
                    await self._db(self._prune, time.time())
                except Exception:
                    log.exception("pruning old alerts failed")
            wait = max(0.05, self.interval - (time.monotonic() - started))
            stop = asyncio.ensure_future(self._stopping.wait())
            wake = asyncio.ensure_future(self._wakeup.wait())
            try:
                await asyncio.wait({stop, wake}, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop.cancel()
                wake.cancel()

    async def _round(self) -> dict[str, Any]:
        async with self._lock:  # a wake-up during a round waits for it
            t0 = time.monotonic()
            units = await self._db(self.units)
            summary = await self._db(
                lambda: evaluate(self.db, units, now=time.time(), max_gap=self.max_gap,
                                 link=self.link)
            )  # fmt: skip
            summary["delivered"] = await self._deliver()
            summary["duration"] = round(time.monotonic() - t0, 4)
            self.last_round = summary
            return summary

    async def _deliver(self) -> dict[str, int]:
        now = dt.datetime.now(dt.UTC)
        groups = await self._db(delivery.claim, self.db, now)
        done = {"sent": 0, "failed": 0}
        if not groups:
            return done
        loop = asyncio.get_running_loop()

        async def one(g: delivery.Group) -> None:
            sent = await loop.run_in_executor(
                self._senders, channels.send, g.url, g.message.title, g.message.body,
                g.event, self.send_timeout,
            )  # fmt: skip
            done["sent" if sent.ok else "failed"] += 1
            if not sent.ok:
                log.warning("alert notification to %s failed: %s", g.channel, sent.error)
            await self._db(
                lambda: delivery.record(self.db, g.ids, sent, dt.datetime.now(dt.UTC),
                                        attempts=self.attempts, retry_after=self.retry_after)
            )  # fmt: skip

        await asyncio.gather(*(one(g) for g in groups))
        return done

    def _prune(self, now: float) -> None:
        cut = dt.datetime.fromtimestamp(now - self.keep, dt.UTC)
        with self.db.session() as s:
            s.execute(delete(Alert).where(Alert.resolved_at < cut))
            s.execute(
                delete(AlertNotification).where(
                    AlertNotification.alert_id.is_(None), AlertNotification.created_at < cut
                )
            )

"""The status poller: every interval, one probe script to every joined host.

Like the job runner, it is one asyncio loop in a background thread with one database thread.
Each host is probed on its own (a host whose previous probe is still in flight is skipped, so
one slow or dead host never holds up the others); answers are written in batches by one
writer. What a probe yields — facts, unit states, a metrics sample, the host's health — goes
to ``host_status`` and ``metric_samples`` (status_models.py); pages and API calls read only
those, they never wait on a host. History is compacted every few minutes (history.compact).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from kernel.agent_client import AgentError
from kernel.server.cluster import share
from kernel.server.core.agents import AgentPool
from kernel.server.core.db import Database, out_of_space
from kernel.server.core.loopthread import LoopThread
from kernel.server.core.shell import RemoteCommand
from kernel.server.status import store
from kernel.server.status.feed import StatusFeed
from kernel.server.status.gate import Gate
from kernel.server.status.history import RetentionPolicy
from kernel.server.status.probe import parse_probe, probe_script
from kernel.server.status.probelimit import ProbeLimit
from kernel.server.status.report import ProbeReport
from kernel.server.status.store import Outcome, Target

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

STALL_AFTER = 1.0  # seconds after which an unanswered probe stops counting as in flight
BATCH_WINDOW = 0.1  # seconds answers may wait to share the writer's transaction
BATCH_MAX = 64  # answers that are written at once, window or not


class Poller(LoopThread):
    name = "kernel-poller"

    def __init__(
        self,
        config: Mapping[str, Any],
        db: Database,
        units: Callable[[], list[str]],
        replicas: Callable[[], tuple[str, list[str]]] | None = None,
        feed: StatusFeed | None = None,
    ) -> None:
        super().__init__()
        cfg = config
        # (this replica, the live ones): a round probes only this replica's share of the
        # hosts (cluster/share.py), so each host is probed once per interval, by one of them.
        self.replicas = replicas
        self.db = db
        self.feed = feed or StatusFeed()  # what changed, for the live status stream
        self.units = units  # the catalogue's units, asked of every host
        self.interval = float(cfg["STATUS_INTERVAL"])
        self.concurrency = int(cfg["STATUS_CONCURRENCY"])
        self.probe_timeout = float(cfg["STATUS_PROBE_TIMEOUT"])
        self.offline_after = int(cfg["STATUS_OFFLINE_AFTER"])
        self.prune_interval = float(cfg["STATUS_PRUNE_INTERVAL"])
        self.connect_timeout = float(cfg.get("AGENT_CONNECT_TIMEOUT") or 5.0)
        self.retention = RetentionPolicy(
            raw_seconds=float(cfg["STATUS_HISTORY_RAW"]),
            keep_seconds=float(cfg["STATUS_HISTORY_KEEP"]),
            bucket_seconds=float(cfg["STATUS_HISTORY_BUCKET"]),
        )
        if self.interval <= 0 or self.concurrency < 1 or self.offline_after < 1:
            raise ValueError(
                "STATUS_INTERVAL must be > 0, STATUS_CONCURRENCY and STATUS_OFFLINE_AFTER >= 1"
            )
        # A probe must answer within 0.4 interval, and a failure is retried after 0.1 interval,
        # so a host cut off just after a good probe is offline within two intervals.
        self.deadline = min(self.probe_timeout, 0.4 * self.interval)
        self.retry_after = 0.1 * self.interval
        self.last_round: dict[str, Any] = {}
        self.make_probe: Callable[[list[str]], RemoteCommand] = probe_script  # a seam for benches
        self._failures: dict[int, int] = {}  # consecutive, as seen by this process
        self.agents = AgentPool(self.connect_timeout)
        self._known: set[int] = set()  # servers the probe limit has a best time for
        self._inflight: set[int] = set()
        self._done: list[Outcome] = []
        # Probes in flight: adaptive up to STATUS_CONCURRENCY (probelimit.py; docs/status.md).
        self.limit = ProbeLimit(ceiling=self.concurrency)

    # -- called from other threads (start() / stop() / running: LoopThread) -------------------
    def refresh(self, server_ids: Iterable[int] | None = None) -> bool:
        """Probe these servers (None: all) now, without waiting; False if not running."""
        loop = self._loop
        if loop is None:
            return False
        ids = None if server_ids is None else list(server_ids)
        loop.call_soon_threadsafe(lambda: self._spawn(self.poll(ids), "refresh"))
        return True

    def poll_now(self, server_ids: Iterable[int] | None = None, timeout: float = 120.0) -> Any:
        """Probe and store, waiting for it (benchmarks, tests); returns the round summary."""
        assert self._loop is not None, "the poller is not running"
        ids = None if server_ids is None else list(server_ids)
        fut = asyncio.run_coroutine_threadsafe(self.poll(ids), self._loop)
        return fut.result(timeout)

    # -- the loop --------------------------------------------------------------------------------
    def _prepare(self) -> None:
        self._flush = asyncio.Event()
        self._slots = Gate(lambda: self.limit.current)

    async def _close(self) -> None:
        await self.agents.close()

    async def _main(self) -> None:
        writer = self._spawn(self._writer(), "writer")
        next_prune = time.monotonic() + min(self.prune_interval, 60.0)
        try:
            while not self._stopping.is_set():
                started = time.monotonic()
                self._spawn(self.poll(None), "round")
                if started >= next_prune:
                    next_prune = started + self.prune_interval
                    self._spawn(
                        self._db(store.prune, self.db, time.time(), self.retention), "prune"
                    )
                wait = max(0.05, self.interval - (time.monotonic() - started))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), wait)
        finally:
            rounds = [t for t in self._tasks if t is not writer]
            for t in rounds:
                t.cancel()
            await asyncio.gather(*rounds, return_exceptions=True)
            self._flush.set()
            await asyncio.sleep(0.05)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            if self._done:
                batch, self._done = self._done, []
                self.feed.publish(await self._db(store.store, self.db, batch, self.offline_after))

    async def poll(self, server_ids: list[int] | None) -> dict[str, Any]:
        """One round over these servers (None: all joined); waits until stored."""
        t0 = time.monotonic()
        targets = await self._db(store.targets, self.db, server_ids)
        if server_ids is None and self.replicas is not None:
            me, live = await self._db(self.replicas)
            if len(live) > 1:
                targets = [t for t in targets if share.owner(t.server_id, live) == me]
        units = await self._db(self.units)
        command = self.make_probe(units)
        if server_ids is None:
            await self.agents.keep_only((t.url, t.key, t.fingerprint) for t in targets)
            for sid in self._known - {t.server_id for t in targets}:
                self.limit.forget(sid)
            self._known = {t.server_id for t in targets}
        outcomes = [
            o
            for o in await asyncio.gather(
                *(
                    self._probe_one(t, command.cmd)
                    for t in targets
                    if t.server_id not in self._inflight
                )
            )
            if o is not None
        ]
        if outcomes:
            await asyncio.gather(*(o.stored for o in outcomes), return_exceptions=True)
        summary = {
            "at": time.time(),
            "hosts": len(outcomes),
            "ok": sum(o.ok for o in outcomes),
            "failed": sum(not o.ok for o in outcomes),
            "duration": round(time.monotonic() - t0, 4),
            "limit": self.limit.current,
            "probe_durations": sorted(o.duration for o in outcomes),
            "errors": sorted({o.error for o in outcomes if o.error})[:5],
        }
        if server_ids is None:
            self.last_round = {k: v for k, v in summary.items() if k != "probe_durations"}
        return summary

    async def _probe_one(self, target: Target, cmd: str) -> Outcome | None:
        self._inflight.add(target.server_id)
        loop = asyncio.get_running_loop()
        holding = False

        def let_go() -> None:
            nonlocal holding
            if holding:
                holding = False
                self._slots.release()

        try:
            await self._slots.acquire()
            holding = True
            # A probe still unanswered after STALL_AFTER waits on the network (a frozen or
            # cut-off host), not for a CPU: it gives its slot back, so a few dead hosts cannot
            # hold up a round's live ones until the deadline.
            timer = loop.call_later(STALL_AFTER, let_go)
            at, t0 = time.time(), time.monotonic()
            try:
                report, error = await self._run_probe(target, cmd)
            finally:
                timer.cancel()
                let_go()
            stored = loop.create_future()
            outcome = Outcome(target, at, time.monotonic() - t0, report, error, stored)
        finally:
            self._inflight.discard(target.server_id)
        sid = target.server_id
        self._failures[sid] = 0 if outcome.ok else self._failures.get(sid, 0) + 1
        if outcome.ok:  # a failure (timeout, refusal) says nothing about queueing
            self.limit.sample(sid, outcome.duration)
        if 0 < self._failures[sid] < self.offline_after:  # confirm soon rather than next round
            asyncio.get_running_loop().call_later(
                self.retry_after, lambda: self._spawn(self.poll([sid]), "retry")
            )
        self._done.append(outcome)
        self._flush.set()
        return outcome

    async def _run_probe(self, target: Target, cmd: str) -> tuple[ProbeReport | None, str | None]:
        client = self.agents.get(target.url, target.key, target.fingerprint)
        try:
            result = await asyncio.wait_for(client.exec(cmd, timeout=self.deadline), self.deadline)
        except TimeoutError:
            return None, f"no answer within {self.deadline:g} s"
        except AgentError as e:
            return None, str(e)
        report = parse_probe(result.stdout)
        if result.timed_out:
            return None, f"probe timed out after {self.deadline:g} s"
        if result.exit_code != 0:
            tail = (result.stderr or "").strip().splitlines()[-1:] or [""]
            return None, f"probe exited {result.exit_code}: {tail[0][:300]}".rstrip(": ")
        if not report.complete:
            return None, "probe output was cut short"
        return report, None

    async def _writer(self) -> None:
        while True:
            await self._flush.wait()
            # Let answers share a transaction: a write costs a few ms whatever its size, and
            # with few probes in flight answers trickle in. Written at once when nothing more
            # is coming (no probe in flight: the end of a round, a lone refresh).
            deadline = time.monotonic() + BATCH_WINDOW
            while self._inflight and len(self._done) < BATCH_MAX and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            self._flush.clear()
            batch, self._done = self._done, []
            if not batch:
                continue
            try:
                changed = await self._db(store.store, self.db, batch, self.offline_after)
            except Exception as e:  # measurements: dropped, the next round measures again
                if out_of_space(e):
                    log.error("could not store %d probe results: the disk is full", len(batch))
                else:
                    log.exception("could not store %d probe results", len(batch))
                for o in batch:
                    if not o.stored.done():
                        o.stored.set_exception(e)
                continue
            self.feed.publish(changed)
            for o in batch:
                if not o.stored.done():
                    o.stored.set_result(None)

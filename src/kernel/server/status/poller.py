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
import collections
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select

from kernel.agent_client import AgentError, AsyncAgentClient
from kernel.server.core.db import Database
from kernel.server.core.loopthread import LoopThread
from kernel.server.core.shell import RemoteCommand
from kernel.server.models.servers import Server
from kernel.server.models.status import HostStatus, MetricSample
from kernel.server.status.health import DEFAULT_OFFLINE_AFTER, HostHealth, next_health
from kernel.server.status.history import MetricPoint, RetentionPolicy, compact, metric_values
from kernel.server.status.probe import (
    CpuTimes,
    ProbeReport,
    cpu_usage,
    parse_probe,
    probe_script,
    report_json,
)
from kernel.server.status.probelimit import ProbeLimit

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

STALL_AFTER = 1.0  # seconds after which an unanswered probe stops counting as in flight
BATCH_WINDOW = 0.1  # seconds answers may wait to share the writer's transaction
BATCH_MAX = 64  # answers that are written at once, window or not
DEFAULTS: dict[str, Any] = {
    "STATUS_INTERVAL": 30.0,  # seconds between probes of one host
    "STATUS_CONCURRENCY": 64,  # most probes in flight at once (the adaptive limit's ceiling)
    "STATUS_PROBE_TIMEOUT": 20.0,  # a probe not answered by then (or 0.4 interval) failed
    "STATUS_OFFLINE_AFTER": DEFAULT_OFFLINE_AFTER,  # consecutive failed probes → offline
    "STATUS_PRUNE_INTERVAL": 300.0,  # seconds between history compactions
    "STATUS_HISTORY_RAW": 86400,  # seconds every sample is kept
    "STATUS_HISTORY_KEEP": 604800,  # seconds downsampled points are kept
    "STATUS_HISTORY_BUCKET": 300,  # seconds per downsampled point
}


@dataclass(frozen=True)
class Target:
    server_id: int
    name: str
    url: str
    key: str
    fingerprint: str | None


@dataclass
class Outcome:
    """One probe's result, waiting to be stored."""

    target: Target
    at: float
    duration: float
    report: ProbeReport | None
    error: str | None
    stored: asyncio.Future[None] = field(repr=False)  # set once written to the database

    @property
    def ok(self) -> bool:
        return self.report is not None and self.error is None


def setting(config: Any, name: str) -> Any:
    value = config.get(name)
    return DEFAULTS[name] if value is None else value


class Poller(LoopThread):
    name = "kernel-poller"

    def __init__(
        self, config: Mapping[str, Any], db: Database, units: Callable[[], list[str]]
    ) -> None:
        super().__init__()
        cfg = config
        self.db = db
        self.units = units  # the catalogue's units, asked of every host
        self.interval = float(setting(cfg, "STATUS_INTERVAL"))
        self.concurrency = int(setting(cfg, "STATUS_CONCURRENCY"))
        self.probe_timeout = float(setting(cfg, "STATUS_PROBE_TIMEOUT"))
        self.offline_after = int(setting(cfg, "STATUS_OFFLINE_AFTER"))
        self.prune_interval = float(setting(cfg, "STATUS_PRUNE_INTERVAL"))
        self.connect_timeout = float(cfg.get("AGENT_CONNECT_TIMEOUT") or 5.0)
        self.retention = RetentionPolicy(
            raw_seconds=float(setting(cfg, "STATUS_HISTORY_RAW")),
            keep_seconds=float(setting(cfg, "STATUS_HISTORY_KEEP")),
            bucket_seconds=float(setting(cfg, "STATUS_HISTORY_BUCKET")),
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
        self._clients: dict[int, tuple[Target, AsyncAgentClient]] = {}
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
        self._slots = _Gate(lambda: self.limit.current)

    async def _close(self) -> None:
        await self._close_clients(set(self._clients))

    async def _main(self) -> None:
        writer = self._spawn(self._writer(), "writer")
        next_prune = time.monotonic() + min(self.prune_interval, 60.0)
        try:
            while not self._stopping.is_set():
                started = time.monotonic()
                self._spawn(self.poll(None), "round")
                if started >= next_prune:
                    next_prune = started + self.prune_interval
                    self._spawn(self._db(self._prune, time.time()), "prune")
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
                await self._db(self._store, batch)

    async def poll(self, server_ids: list[int] | None) -> dict[str, Any]:
        """One round over these servers (None: all joined); waits until stored."""
        t0 = time.monotonic()
        targets = await self._db(self._targets, server_ids)
        units = await self._db(self.units)
        command = self.make_probe(units)
        if server_ids is None:
            await self._close_clients(set(self._clients) - {t.server_id for t in targets})
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
        client = await self._client(target)
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

    async def _client(self, target: Target) -> AsyncAgentClient:
        have = self._clients.get(target.server_id)
        if have is not None and have[0] == target:
            return have[1]
        if have is not None:
            await have[1].aclose()
        client = AsyncAgentClient(
            target.url,
            target.key,
            timeout=self.connect_timeout,
            tls_fingerprint=target.fingerprint,
        )
        self._clients[target.server_id] = (target, client)
        return client

    async def _close_clients(self, ids: set[int]) -> None:
        for sid in ids:
            entry = self._clients.pop(sid, None)
            self.limit.forget(sid)
            if entry is not None:
                with contextlib.suppress(Exception):
                    await entry[1].aclose()

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
                await self._db(self._store, batch)
            except Exception as e:
                log.exception("could not store %d probe results", len(batch))
                for o in batch:
                    if not o.stored.done():
                        o.stored.set_exception(e)
                continue
            for o in batch:
                if not o.stored.done():
                    o.stored.set_result(None)

    # -- database side (the poller's one database thread) -----------------------------------
    def _targets(self, server_ids: list[int] | None) -> list[Target]:
        q = select(Server).where(Server.removed_at.is_(None), Server.agent_url.is_not(None))
        if server_ids is not None:
            q = q.where(Server.id.in_(server_ids))
        with self.db.session() as s:
            return [
                Target(srv.id, srv.name, srv.agent_url or "", srv.agent_key, srv.tls_fingerprint)
                for srv in s.scalars(q.order_by(Server.name))
            ]

    def _store(self, batch: list[Outcome]) -> None:
        ids = [o.target.server_id for o in batch]
        with self.db.session() as s:
            # Two queries for the whole batch, not two per host.
            servers = {srv.id: srv for srv in s.scalars(select(Server).where(Server.id.in_(ids)))}
            statuses = {
                st.server_id: st
                for st in s.scalars(select(HostStatus).where(HostStatus.server_id.in_(ids)))
            }
            for o in batch:
                srv = servers.get(o.target.server_id)
                if srv is None or srv.removed_at is not None:
                    continue
                st = statuses.get(srv.id)
                if st is None:
                    st = HostStatus(server_id=srv.id, state="unknown", failures=0)
                    st.facts, st.metrics, st.units, st.warnings = {}, {}, {}, []
                    s.add(st)
                    statuses[srv.id] = st
                apply_outcome(st, srv, o, self.offline_after, s)

    def _prune(self, now: float) -> int:
        """Compact each host's history (history.compact); returns rows removed."""
        raw_cut = now - self.retention.raw_seconds
        removed = 0
        with self.db.session() as s:
            ids = s.scalars(
                select(MetricSample.server_id)
                .where(MetricSample.t < raw_cut, MetricSample.count == 1)
                .distinct()
            ).all()
            for sid in ids:
                rows = s.scalars(
                    select(MetricSample).where(
                        MetricSample.server_id == sid, MetricSample.t < raw_cut
                    )
                ).all()
                kept = compact([_point(r) for r in rows], now, self.retention)
                s.execute(
                    delete(MetricSample).where(
                        MetricSample.server_id == sid, MetricSample.t < raw_cut
                    )
                )
                s.add_all(
                    MetricSample(server_id=sid, t=p.t, count=p.count, values=dict(p.values))
                    for p in kept
                )
                removed += len(rows) - len(kept)
            # Whatever is past the horizon goes, also for hosts with nothing left to merge.
            res = s.execute(
                delete(MetricSample).where(MetricSample.t < now - self.retention.keep_seconds)
            )
            removed += int(getattr(res, "rowcount", 0) or 0)
        return removed


def apply_outcome(st: HostStatus, srv: Server, o: Outcome, offline_after: int, s: Any) -> None:
    """Fold one probe into the host's status row (and its server row's online/offline)."""
    at = dt.datetime.fromtimestamp(o.at, dt.UTC)
    prev = HostHealth(
        state=st.state,
        failures=st.failures,
        last_error=st.last_error,
        last_error_at=st.last_error_at.timestamp() if st.last_error_at else None,
        last_ok_at=st.last_ok_at.timestamp() if st.last_ok_at else None,
    )
    health = next_health(prev, ok=o.ok, at=o.at, error=o.error, offline_after=offline_after)
    st.state, st.failures, st.last_error = health.state, health.failures, health.last_error
    st.last_error_at = _when(health.last_error_at)
    st.last_ok_at = _when(health.last_ok_at)
    st.probed_at, st.duration = at, round(o.duration, 4)
    if o.report is not None and o.ok:
        data = report_json(o.report)
        times = o.report.metrics.cpu_times
        cpu = None
        if times is not None and st.cpu_total is not None and st.cpu_idle is not None:
            cpu = cpu_usage(CpuTimes(st.cpu_total, st.cpu_idle), times)
        values = metric_values(o.report, cpu_percent=cpu)
        data["metrics"].pop("cpu_times", None)
        data["metrics"]["cpu_percent_interval"] = cpu
        # Facts, units and warnings rarely change: assigned only when they do, so the UPDATE
        # does not carry (and encode) them every round.
        st.metrics = data["metrics"]
        for column, value in (
            ("facts", data["facts"]),
            ("units", data["units"]),
            ("warnings", data["warnings"][:50]),
        ):
            if getattr(st, column) != value:
                setattr(st, column, value)
        st.cpu_total = times.total if times else None
        st.cpu_idle = times.idle if times else None
        s.add(MetricSample(server_id=srv.id, t=o.at, count=1, values=values))
        srv.last_seen = at
    # Keep the inventory's online/offline in step (pending and init_failed are not ours).
    if health.state == "online" and srv.state == "offline":
        srv.state, srv.last_error = "online", None
    elif health.state == "offline" and srv.state == "online":
        srv.state, srv.last_error = "offline", health.last_error


def _when(ts: float | None) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(ts, dt.UTC) if ts is not None else None


def _point(row: MetricSample) -> MetricPoint:
    return MetricPoint(t=row.t, values=dict(row.values or {}), count=row.count)


class _Gate:
    """Like a semaphore, but its size (``size()``) may change between acquisitions, and a
    holder may give its slot back before it is done (`release` once, from the loop)."""

    def __init__(self, size: Callable[[], int]) -> None:
        self._size = size
        self._held = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def acquire(self) -> None:
        while self._held >= self._size():
            fut = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            try:
                await fut
            except asyncio.CancelledError:
                if fut in self._waiters:
                    self._waiters.remove(fut)
                self._wake()  # a wake-up meant for it goes to the next in line
                raise
        self._held += 1

    def release(self) -> None:
        self._held -= 1
        self._wake()

    def _wake(self) -> None:
        free = self._size() - self._held
        while free > 0 and self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                free -= 1

"""Storing what probes said (the poller's database side, run on its one database thread):
each host's status row and a metrics sample per probe, the inventory's online/offline kept in
step, and the periodic compaction of metrics history."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, select

from kernel.server.core.db import Database
from kernel.server.models.servers import Server
from kernel.server.models.status import HostStatus, MetricSample
from kernel.server.status.brief import brief, changes
from kernel.server.status.health import HostHealth, next_health
from kernel.server.status.history import MetricPoint, RetentionPolicy, compact, metric_values
from kernel.server.status.report import CpuTimes, ProbeReport, report_json
from kernel.server.status.sections import cpu_usage


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


def targets(db: Database, server_ids: list[int] | None) -> list[Target]:
    """The joined servers to probe (None: all)."""
    q = select(Server).where(Server.removed_at.is_(None), Server.agent_url.is_not(None))
    if server_ids is not None:
        q = q.where(Server.id.in_(server_ids))
    with db.session() as s:
        return [
            Target(srv.id, srv.name, srv.agent_url or "", srv.agent_key, srv.tls_fingerprint)
            for srv in s.scalars(q.order_by(Server.name))
        ]


HostChange = tuple[dict[str, Any], list[str]]  # a host's brief (status/brief.py), what changed


def store(db: Database, batch: Sequence[Outcome], offline_after: int) -> list[HostChange]:
    """Fold a batch of probe outcomes into the hosts' rows (two reads for the whole batch);
    returns the hosts whose state, unit states or figures changed (for the status feed)."""
    ids = [o.target.server_id for o in batch]
    changed: list[HostChange] = []
    with db.session() as s:
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
                before = None
            else:
                before = _brief(srv, st)
            apply_outcome(st, srv, o, offline_after, s)
            after = _brief(srv, st)
            what = changes(before, after)
            if what:
                changed.append((after, what))
    return changed


def _brief(srv: Server, st: HostStatus) -> dict[str, Any]:
    return brief(srv.id, srv.name, srv.state, st.state, st.units, st.metrics)


def prune(db: Database, now: float, retention: RetentionPolicy) -> int:
    """Compact each host's history (history.compact); returns rows removed."""
    raw_cut = now - retention.raw_seconds
    removed = 0
    with db.session() as s:
        ids = s.scalars(
            select(MetricSample.server_id)
            .where(MetricSample.t < raw_cut, MetricSample.count == 1)
            .distinct()
        ).all()
        for sid in ids:
            rows = s.scalars(
                select(MetricSample).where(MetricSample.server_id == sid, MetricSample.t < raw_cut)
            ).all()
            kept = compact([_point(r) for r in rows], now, retention)
            s.execute(
                delete(MetricSample).where(MetricSample.server_id == sid, MetricSample.t < raw_cut)
            )
            s.add_all(
                MetricSample(server_id=sid, t=p.t, count=p.count, values=dict(p.values))
                for p in kept
            )
            removed += len(rows) - len(kept)
        # Whatever is past the horizon goes, also for hosts with nothing left to merge.
        res = s.execute(delete(MetricSample).where(MetricSample.t < now - retention.keep_seconds))
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

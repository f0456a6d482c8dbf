"""Storing what probes said (the poller's database side, run on its one database thread):
each host's status row and a metrics sample per probe, the inventory's online/offline kept in
step, and the periodic compaction of metrics history."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, delete, insert, select, update

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


# What store() reads of a host's status row: its health, what decides an update, and what
# the host's brief shows (status/brief.py: units, metrics).
_STATUS_COLUMNS = (
    HostStatus.server_id, HostStatus.state, HostStatus.failures, HostStatus.last_error,
    HostStatus.last_error_at, HostStatus.last_ok_at, HostStatus.facts, HostStatus.units,
    HostStatus.metrics, HostStatus.warnings, HostStatus.cpu_total, HostStatus.cpu_idle,
)  # fmt: skip

HostChange = tuple[dict[str, Any], list[str]]  # a host's brief (status/brief.py), what changed


def store(db: Database, batch: Sequence[Outcome], offline_after: int) -> list[HostChange]:
    """Fold a batch of probe outcomes into the hosts' rows, in one transaction of a few
    statements whatever the batch's size: two reads, then each kind of write as one
    executemany (psycopg sends them in a pipeline) — no ORM objects, no per-row round trips.
    At 10 000 hosts a round is 10 000 of these rows (bench/bench_scale.py). Returns the hosts
    whose state, unit states or figures changed (for the status feed)."""
    ids = sorted({o.target.server_id for o in batch})
    changed: list[HostChange] = []
    with db.session() as s:
        servers = {
            r.id: {"name": r.name, "state": r.state, "last_error": r.last_error}
            for r in s.execute(
                select(Server.id, Server.name, Server.state, Server.last_error).where(
                    Server.id.in_(ids), Server.removed_at.is_(None)
                )
            )
        }
        read = {sid: dict(v) for sid, v in servers.items()}
        statuses: dict[int, dict[str, Any]] = {
            r.server_id: r._asdict()
            for r in s.execute(select(*_STATUS_COLUMNS).where(HostStatus.server_id.in_(ids)))
        }
        new: dict[int, dict[str, Any]] = {}  # rows to insert
        updates: dict[int, dict[str, Any]] = {}  # rows to update: server id -> new values
        samples: list[dict[str, Any]] = []
        seen: dict[int, dict[str, Any]] = {}  # servers' new state, last_error, last_seen
        for o in batch:
            sid = o.target.server_id
            srv = servers.get(sid)
            if srv is None:  # removed meanwhile
                continue
            st = statuses.get(sid)
            if st is None:
                st = statuses[sid] = {
                    "server_id": sid, "state": "unknown", "failures": 0, "last_error": None,
                    "last_error_at": None, "last_ok_at": None, "facts": {}, "metrics": {},
                    "units": {}, "warnings": [], "cpu_total": None, "cpu_idle": None,
                }  # fmt: skip
                new[sid] = st
                before = None
            else:
                before = _brief(sid, srv, st)
            values = fold(st, srv, o, offline_after, samples)
            was = read[sid]
            srv_values = {k: srv[k] for k in ("state", "last_error") if srv[k] != was[k]}
            if "last_seen" in values:
                srv_values["last_seen"] = values.pop("last_seen")
            if sid not in new:
                updates.setdefault(sid, {}).update(values)
            if srv_values:
                seen.setdefault(sid, {}).update(srv_values)
            after = _brief(sid, srv, st)
            what = changes(before, after)
            if what:
                changed.append((after, what))
        if new:
            s.execute(insert(HostStatus), list(new.values()))
        # One UPDATE statement per set of columns (the rare ones only when they changed).
        _update_many(s, HostStatus.__table__, HostStatus.server_id, updates)
        if samples:
            s.execute(insert(MetricSample), samples)
        _update_many(s, Server.__table__, Server.id, seen)
    return changed


def _brief(sid: int, srv: dict[str, Any], st: dict[str, Any]) -> dict[str, Any]:
    return brief(sid, srv["name"], srv["state"], st["state"], st["units"], st["metrics"])


def _update_many(s: Any, table: Any, key: Any, rows: dict[int, dict[str, Any]]) -> None:
    """UPDATE ``table`` SET … WHERE ``key`` = id for each of ``rows`` ({id: {column: value}}),
    as one executemany per set of columns. Bound names are prefixed: SQLAlchemy reserves a
    column's own name for the statement's automatic parameters."""
    shapes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for sid, values in rows.items():
        cols = tuple(sorted(values))
        shapes.setdefault(cols, []).append({"b_id": sid, **{f"b_{c}": values[c] for c in cols}})
    for cols, params in shapes.items():
        stmt = (
            update(table)
            .where(key == bindparam("b_id"))
            .values({c: bindparam(f"b_{c}") for c in cols})
        )
        s.connection().execute(stmt, params)


def fold(
    st: dict[str, Any], srv: dict[str, Any], o: Outcome, offline_after: int,
    samples: list[dict[str, Any]],
) -> dict[str, Any]:  # fmt: skip
    """Fold one probe into the host's status row ``st`` and server row ``srv`` (both dicts,
    changed in place; a metrics sample appended to ``samples``); returns the status columns
    to write (and ``last_seen`` for the server row)."""
    at = dt.datetime.fromtimestamp(o.at, dt.UTC)
    prev = HostHealth(
        state=st["state"],
        failures=st["failures"],
        last_error=st["last_error"],
        last_error_at=st["last_error_at"].timestamp() if st["last_error_at"] else None,
        last_ok_at=st["last_ok_at"].timestamp() if st["last_ok_at"] else None,
    )
    health = next_health(prev, ok=o.ok, at=o.at, error=o.error, offline_after=offline_after)
    out: dict[str, Any] = {
        "state": health.state,
        "failures": health.failures,
        "last_error": health.last_error,
        "last_error_at": _when(health.last_error_at),
        "last_ok_at": _when(health.last_ok_at),
        "probed_at": at,
        "duration": round(o.duration, 4),
    }
    if o.report is not None and o.ok:
        data = report_json(o.report)
        times = o.report.metrics.cpu_times
        cpu = None
        if times is not None and st["cpu_total"] is not None and st["cpu_idle"] is not None:
            cpu = cpu_usage(CpuTimes(st["cpu_total"], st["cpu_idle"]), times)
        values = metric_values(o.report, cpu_percent=cpu)
        data["metrics"].pop("cpu_times", None)
        data["metrics"]["cpu_percent_interval"] = cpu
        out["metrics"] = data["metrics"]
        # Facts, units and warnings rarely change: written only when they do, so the UPDATE
        # does not carry (and encode) them every round.
        for column, value in (
            ("facts", data["facts"]),
            ("units", data["units"]),
            ("warnings", data["warnings"][:50]),
        ):
            if st.get(column) != value:
                out[column] = value
        out["cpu_total"] = times.total if times else None
        out["cpu_idle"] = times.idle if times else None
        samples.append({"server_id": st["server_id"], "t": o.at, "count": 1, "values": values})
        out["last_seen"] = at
    st.update({k: v for k, v in out.items() if k != "last_seen"})
    # Keep the inventory's online/offline in step (pending and init_failed are not ours).
    if health.state == "online" and srv["state"] == "offline":
        srv["state"], srv["last_error"] = "online", None
    elif health.state == "offline" and srv["state"] == "online":
        srv["state"], srv["last_error"] = "offline", health.last_error
    return out


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


def _when(ts: float | None) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(ts, dt.UTC) if ts is not None else None


def _point(row: MetricSample) -> MetricPoint:
    return MetricPoint(t=row.t, values=dict(row.values or {}), count=row.count)

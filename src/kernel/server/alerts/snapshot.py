"""Reading what the rules look at, in one reading transaction: the enabled rules, the live
joined servers with their last status (host_status), the alerts not resolved, the units seen
active, recent load samples (metric_samples) and the runs of jobs that finished lately. The
poller and the runner write all of it; the evaluator only reads it, so it works the same
whichever replica's poller wrote it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from kernel.server.alerts.conditions import Host, JobRun
from kernel.server.alerts.lifecycle import Current
from kernel.server.models.alerts import Alert, AlertRule, AlertUnitSeen
from kernel.server.models.jobs import Job, Run
from kernel.server.models.servers import Server
from kernel.server.models.status import HostStatus, MetricSample


@dataclass(frozen=True)
class Rule:
    id: int
    name: str
    kind: str
    params: Mapping[str, Any]
    tags: tuple[str, ...]
    channels: tuple[int, ...] | None
    hold_open: float
    hold_resolve: float
    created_at: float


@dataclass(frozen=True)
class Live:
    """An alert not resolved: its lifecycle state and what it is about."""

    current: Current
    rule_id: int | None
    server_id: int | None


@dataclass
class Snapshot:
    now: float
    rules: list[Rule]
    hosts: dict[int, Host]
    live: dict[str, Live]  # by key
    seen_active: set[tuple[int, str]]
    series: dict[str, dict[int, list[tuple[float, float]]]] = field(default_factory=dict)
    runs: list[JobRun] = field(default_factory=list)
    parents: dict[int, int | None] = field(default_factory=dict)


def rule_of(r: AlertRule) -> Rule:
    return Rule(
        id=r.id,
        name=r.name,
        kind=r.kind,
        params=dict(r.params or {}),
        tags=tuple(r.tags or ()),
        channels=None if r.channels is None else tuple(r.channels),
        hold_open=float(r.hold_open),
        hold_resolve=float(r.hold_resolve),
        created_at=r.created_at.timestamp(),
    )


def read(s: Session, now: float, max_gap: float) -> Snapshot:
    enabled = select(AlertRule).where(AlertRule.enabled.is_(True)).order_by(AlertRule.id)
    rules = [rule_of(r) for r in s.scalars(enabled)]
    snap = Snapshot(now, rules, hosts(s), live(s), seen_active(s))
    loads = [r for r in rules if r.kind == "load"]
    if loads:
        longest = max(float(r.params["minutes"]) * 60 for r in loads) + 2 * max_gap
        metrics = sorted({str(r.params.get("metric", "load1")) for r in loads})
        snap.series = series(s, metrics, now - longest)
    job_rules = [r for r in rules if r.kind == "job"]
    if job_rules:
        since = min(max(now - float(r.params["window"]), r.created_at) for r in job_rules)
        snap.runs, snap.parents = recent_runs(s, since)
    return snap


def hosts(s: Session) -> dict[int, Host]:
    rows = s.execute(
        select(
            Server.id, Server.name, Server.tags, HostStatus.state, HostStatus.last_ok_at,
            HostStatus.last_error, HostStatus.metrics, HostStatus.units,
        )
        .outerjoin(HostStatus, HostStatus.server_id == Server.id)
        .where(Server.removed_at.is_(None), Server.agent_url.is_not(None))
    ).all()  # fmt: skip
    return {
        sid: Host(
            id=sid,
            name=name,
            tags=tuple(tags or ()),
            state=state or "unknown",
            last_ok_at=last_ok.timestamp() if last_ok else None,
            last_error=last_error,
            metrics=metrics or {},
            units=units or {},
        )
        for sid, name, tags, state, last_ok, last_error, metrics, units in rows
    }


def live(s: Session) -> dict[str, Live]:
    rows = s.execute(
        select(Alert.id, Alert.key, Alert.state, Alert.since, Alert.clear_since, Alert.rule_id,
               Alert.server_id)
        .where(Alert.resolved_at.is_(None))
    ).all()  # fmt: skip
    return {
        key: Live(
            Current(aid, state, since.timestamp(), clear.timestamp() if clear else None),
            rule_id,
            server_id,
        )
        for aid, key, state, since, clear, rule_id, server_id in rows
    }


def seen_active(s: Session) -> set[tuple[int, str]]:
    rows = s.execute(select(AlertUnitSeen.server_id, AlertUnitSeen.unit))
    return {(sid, unit) for sid, unit in rows}


def series(
    s: Session, metrics: Sequence[str], since: float
) -> dict[str, dict[int, list[tuple[float, float]]]]:
    out: dict[str, dict[int, list[tuple[float, float]]]] = {m: {} for m in metrics}
    rows = s.execute(
        select(MetricSample.server_id, MetricSample.t, MetricSample.values)
        .where(MetricSample.t >= since)
        .order_by(MetricSample.t)
    )
    for sid, t, values in rows:
        for m in metrics:
            v = (values or {}).get(m)
            if isinstance(v, int | float):
                out[m].setdefault(sid, []).append((float(t), float(v)))
    return out


def recent_runs(s: Session, since: float) -> tuple[list[JobRun], dict[int, int | None]]:
    """The runs of jobs finished since ``since``, and those jobs' parents (reruns)."""
    cut = dt.datetime.fromtimestamp(since, dt.UTC)
    rows = s.execute(
        select(Job.id, Job.kind, Job.title, Job.meta, Job.parent_id, Job.finished_at,
               Run.server_id, Run.server_name, Run.state, Run.exit_code, Run.error)
        .join(Run, Run.job_id == Job.id)
        .where(Job.finished_at >= cut, Job.state.in_(("finished", "cancelled")))
    ).all()  # fmt: skip
    runs = [
        JobRun(
            job_id=jid, kind=kind, title=title or "", meta=meta or {}, parent_id=parent,
            finished_at=finished.timestamp(), server_id=sid, server_name=sname, state=state,
            exit_code=code, error=error,
        )
        for jid, kind, title, meta, parent, finished, sid, sname, state, code, error in rows
    ]  # fmt: skip
    parents = {r.job_id: r.parent_id for r in runs}
    # Reruns of reruns: follow each chain back through jobs older than the window too.
    todo = {p for p in parents.values() if p is not None and p not in parents}
    hops = 0
    while todo and hops < 20:
        found = dict(s.execute(select(Job.id, Job.parent_id).where(Job.id.in_(sorted(todo)))).all())
        parents.update(found)
        for missing in todo - set(found):
            parents[missing] = None
        todo = {p for p in found.values() if p is not None and p not in parents}
        hops += 1
    return runs, parents

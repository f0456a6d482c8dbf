"""Schedules as the API changes and shows them (no Flask): create, edit, and their answers
with the next planned times and the latest firings' results."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from kernel.exceptions import Conflict, InvalidInput
from kernel.server.core.text import iso
from kernel.server.jobs import states
from kernel.server.jobs.service import live_servers
from kernel.server.models.jobs import Job, Run
from kernel.server.models.schedules import Firing, Schedule
from kernel.server.schedules import cron

NEXT_SHOWN = 5  # next planned times in an answer
FIRINGS_SHOWN = 20  # latest firings in one schedule's answer

# Fields an edit may set as given; cron and timezone are checked together, stdin "" clears.
PLAIN_FIELDS = ("description", "cmd", "env", "cwd", "timeout", "skip_if_running", "missed")


def check_targets(s: Session, spec: dict[str, Any]) -> dict[str, Any]:
    """Targets are resolved at each firing (a new server with the tag is included); named
    servers must exist now, and something must be chosen."""
    if not (spec.get("servers") or spec.get("tags") or spec.get("all")):
        raise InvalidInput("choose targets: 'servers' (names), 'tags', or 'all': true")
    names = set(spec.get("servers") or [])
    if names:
        known = {srv.name for srv in live_servers(s)}
        unknown = sorted(names - known)
        if unknown:
            raise InvalidInput(f"no such server(s): {', '.join(unknown)}")
    return spec


def _unique_name(s: Session, name: str, schedule_id: int | None = None) -> None:
    found = s.scalar(select(Schedule.id).where(Schedule.name == name))
    if found is not None and found != schedule_id:
        raise Conflict(f"a schedule named {name!r} exists (id {found})")


def create(s: Session, fields: dict[str, Any], *, created_by: str, now: dt.datetime) -> Schedule:
    spec = cron.parse(fields["cron"], fields["timezone"])
    _unique_name(s, fields["name"])
    check_targets(s, fields["targets"])
    sched = Schedule(
        name=fields["name"],
        description=fields.get("description") or "",
        cmd=fields["cmd"],
        stdin=fields.get("stdin"),
        env=dict(fields.get("env") or {}),
        cwd=fields.get("cwd"),
        timeout=fields.get("timeout", 600.0),
        targets=fields["targets"],
        cron=spec.expression,
        timezone=spec.timezone,
        enabled=fields.get("enabled", True),
        skip_if_running=fields.get("skip_if_running", False),
        missed=fields.get("missed", "skip"),
        next_at=spec.after(now) if fields.get("enabled", True) else None,
        created_by=created_by,
        created_at=now,
        updated_at=now,
    )
    s.add(sched)
    s.flush()
    return sched


def edit(s: Session, sched: Schedule, changes: dict[str, Any], *, now: dt.datetime) -> list[str]:
    """Apply ``changes`` (only the fields given); the names of the fields changed. A new
    cron expression, zone or enabling plans from ``now`` on (no planned time of the past is
    fired for it); disabling clears the next planned time."""
    changed: list[str] = []
    if "name" in changes and changes["name"] != sched.name:
        _unique_name(s, changes["name"], sched.id)
        sched.name = changes["name"]
        changed.append("name")
    for name in PLAIN_FIELDS:
        if name in changes and changes[name] != getattr(sched, name):
            setattr(sched, name, changes[name])
            changed.append(name)
    if "stdin" in changes:
        stdin = changes["stdin"] or None
        if stdin != sched.stdin:
            sched.stdin = stdin
            changed.append("stdin")
    if "targets" in changes and changes["targets"] != sched.targets:
        sched.targets = check_targets(s, changes["targets"])
        changed.append("targets")
    expression = changes.get("cron", sched.cron)
    zone = changes.get("timezone", sched.timezone)
    spec = cron.parse(expression, zone)
    replan = False
    if (spec.expression, spec.timezone) != (sched.cron, sched.timezone):
        changed += [f for f in ("cron", "timezone") if f in changes]
        sched.cron, sched.timezone = spec.expression, spec.timezone
        replan = True
    enabled = changes.get("enabled", sched.enabled)
    if enabled != sched.enabled:
        sched.enabled = enabled
        changed.append("enabled")
        replan = True
    if replan or (sched.enabled and sched.next_at is None):
        sched.next_at = spec.after(now) if sched.enabled else None
    if changed:
        sched.updated_at = now
    return changed


# -- answers ----------------------------------------------------------------------------------
def schedule_json(
    sched: Schedule,
    last: dict[str, Any] | None,
    *,
    firings: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": sched.id,
        "name": sched.name,
        "description": sched.description,
        "cmd": sched.cmd,
        "has_stdin": sched.stdin is not None,
        "env": sorted((sched.env or {}).keys()),
        "cwd": sched.cwd,
        "timeout": sched.timeout,
        "targets": sched.targets,
        "cron": sched.cron,
        "cron_text": "",
        "timezone": sched.timezone,
        "enabled": sched.enabled,
        "skip_if_running": sched.skip_if_running,
        "missed": sched.missed,
        "next_at": iso(sched.next_at),
        "next_firings": [],
        "last_firing": last,
        "created_by": sched.created_by,
        "created_at": iso(sched.created_at),
        "updated_at": iso(sched.updated_at),
    }
    try:
        spec = cron.parse(sched.cron, sched.timezone)
    except InvalidInput:
        spec = None
    if spec is not None:
        out["cron_text"] = spec.describe()
        if sched.enabled and sched.next_at is not None:
            out["next_firings"] = [iso(t) for t in spec.upcoming(sched.next_at, NEXT_SHOWN)]
    if firings is not None:
        out["stdin"] = sched.stdin
        out["firings"] = firings
    return out


def firings_json(s: Session, firings: Sequence[Firing]) -> list[dict[str, Any]]:
    """Firings with their jobs' states and run summaries (two queries for all of them)."""
    job_ids = sorted({f.job_id for f in firings if f.job_id is not None})
    job_states: dict[int, str] = {}
    runs: dict[int, list[str]] = {}
    if job_ids:
        job_states = {
            job_id: state
            for job_id, state in s.execute(select(Job.id, Job.state).where(Job.id.in_(job_ids)))
        }
        for job_id, state in s.execute(
            select(Run.job_id, Run.state).where(Run.job_id.in_(job_ids))
        ):
            runs.setdefault(job_id, []).append(state)
    return [
        {
            "id": f.id,
            "schedule_id": f.schedule_id,
            "planned_at": iso(f.planned_at),
            "state": f.state,
            "job_id": f.job_id,
            "job_state": job_states.get(f.job_id) if f.job_id is not None else None,
            "summary": (
                {k: v for k, v in states.summary(runs.get(f.job_id, [])).items() if v}
                if f.job_id is not None and f.job_id in job_states
                else None
            ),
            "note": f.note,
            "missed_count": f.missed_count,
            "by": f.by,
            "created_at": iso(f.created_at),
        }
        for f in firings
    ]


def latest_firings(s: Session, schedule_ids: Iterable[int]) -> dict[int, Firing]:
    """Each schedule's latest firing (by claim order)."""
    ids = list(schedule_ids)
    if not ids:
        return {}
    newest = (
        select(func.max(Firing.id)).where(Firing.schedule_id.in_(ids)).group_by(Firing.schedule_id)
    )
    return {f.schedule_id: f for f in s.scalars(select(Firing).where(Firing.id.in_(newest)))}


def firings_of(
    s: Session, schedule_id: int, *, limit: int, before: int | None = None
) -> list[Firing]:
    q = select(Firing).where(Firing.schedule_id == schedule_id)
    if before:
        q = q.where(Firing.id < before)
    return list(s.scalars(q.order_by(Firing.id.desc()).limit(limit)))


def list_json(s: Session) -> list[dict[str, Any]]:
    schedules = list(s.scalars(select(Schedule).order_by(Schedule.name)))
    latest = latest_firings(s, [sc.id for sc in schedules])
    shown = dict(zip(latest, firings_json(s, list(latest.values())), strict=True))
    return [schedule_json(sc, shown.get(sc.id)) for sc in schedules]


def one_json(s: Session, sched: Schedule) -> dict[str, Any]:
    firings = firings_json(s, firings_of(s, sched.id, limit=FIRINGS_SHOWN))
    return schedule_json(sched, firings[0] if firings else None, firings=firings)


def preview(expression: str, timezone: str, *, now: dt.datetime, count: int) -> dict[str, Any]:
    spec = cron.parse(expression, timezone)
    first = spec.after(now)
    times = spec.upcoming(first, count)
    return {
        "cron": spec.expression,
        "cron_text": spec.describe(),
        "timezone": spec.timezone,
        "next_firings": [iso(t) for t in times],
        "next_firings_local": [t.astimezone(spec.zone).isoformat() for t in times],
    }

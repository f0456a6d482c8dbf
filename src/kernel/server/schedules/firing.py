"""Firing schedules, exactly once: the claim is the database's.

`fire_due(db, runner, now=…, grace=…)` fires every enabled schedule whose next planned time
has come. Each schedule is claimed in one transaction that locks its row (``FOR UPDATE`` on
PostgreSQL; SQLite's write lock), inserts a `Firing` row per planned time it settles —
unique per (schedule, planned time) — creates the job, moves ``next_at`` on (only from the
value it read) and writes the audit lines. Whatever crashes, restarts or races with another
replica, a planned time is settled once: a second claim finds ``next_at`` moved, or fails on
the unique row and rolls back its job with it. The job's runs start after the commit, as any
job's do (`runner.admission`).

Planned times that passed while the server was not running (older than SCHEDULE_GRACE) are
*missed*: the schedule's policy ``skip`` records them in one ``missed`` row with a note;
``run_once`` runs once, late, for all of them. A firing whose previous job is still running
is ``skipped`` when the schedule says so; a firing that cannot make a job (no server matches
its targets any more) is an ``error`` row with the reason. Every time is injected (``now``),
so tests drive it with their own clock.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from kernel.exceptions import Conflict, InvalidInput, NotFound
from kernel.server.audit.log import write as audit_write
from kernel.server.core.db import Database
from kernel.server.core.shell import RemoteCommand
from kernel.server.core.text import iso
from kernel.server.jobs.runner import Admission
from kernel.server.jobs.service import create_job, resolve_targets
from kernel.server.models.jobs import Job
from kernel.server.models.schedules import Firing, Schedule
from kernel.server.models.servers import Server
from kernel.server.schedules import cron

log = logging.getLogger(__name__)
KIND = "schedule"  # the jobs' kind
ACTOR = "scheduler"
MAX_NOTE = 2000


class Admitting(Protocol):
    """What firing needs of the job runner (`Runner`): a way in for a new job's runs."""

    def admission(self, runs: int) -> Admission: ...


@dataclass
class Settled:
    """What one claim wrote: its firing rows (in order) and the job it started, if any."""

    firings: list[Firing] = field(default_factory=list)
    job: Job | None = None


class _Lost(Exception):
    """Another process settled the same planned time first: this claim rolls back."""


def fire_due(
    db: Database, runner: Admitting, *, now: dt.datetime, grace: float
) -> dt.datetime | None:
    """Fire what is due at ``now``; the earliest planned time still ahead (None: none)."""
    with db.reading() as s:
        ids = s.scalars(
            select(Schedule.id)
            .where(Schedule.enabled.is_(True), Schedule.next_at <= now)
            .order_by(Schedule.next_at, Schedule.id)
        ).all()
    for schedule_id in ids:
        try:
            fire_schedule(db, runner, schedule_id, now=now, grace=grace)
        except Exception:  # one schedule's trouble must not stop the others
            log.exception("could not fire schedule %s", schedule_id)
    with db.reading() as s:
        return s.scalar(
            select(Schedule.next_at)
            .where(Schedule.enabled.is_(True), Schedule.next_at.is_not(None))
            .order_by(Schedule.next_at)
            .limit(1)
        )


def fire_schedule(
    db: Database, runner: Admitting, schedule_id: int, *, now: dt.datetime, grace: float
) -> Settled | None:
    """Settle what is due of one schedule (None: nothing was, or another process did it)."""
    try:
        with db.sessions() as s:
            sched = _lock(s, schedule_id)
            if sched is None or not sched.enabled or sched.next_at is None or sched.next_at > now:
                return None
            plan = _plan(s, sched, now, grace)
            with runner.admission(len(plan.servers)) as admission:
                settled = _write(s, sched, plan, now=now, owner=admission.owner)
                if not _advance(s, sched, plan.next_at):
                    raise _Lost
                s.commit()
            if settled.job is not None:
                admission.launch(settled.job, plan.servers)
            return settled
    except (_Lost, IntegrityError):
        log.info("schedule %s: planned time already settled by another process", schedule_id)
        return None


def run_now(
    db: Database, runner: Admitting, schedule_id: int, *, now: dt.datetime, by: str
) -> Settled:
    """A firing by hand (``POST /api/v1/schedules/<id>/run``): now, whatever the cron says;
    the next planned time stays as it is. Conflict if the schedule skips overlapping
    firings and its previous job is still running; InvalidInput if no server matches."""
    with db.sessions() as s:
        sched = _lock(s, schedule_id)
        if sched is None:
            raise NotFound(f"no schedule {schedule_id}")
        if sched.skip_if_running:
            busy = _running_job(s, sched.id)
            if busy is not None:
                raise Conflict(
                    f"schedule {sched.name!r} skips overlapping firings and its job {busy} "
                    "is still running"
                )
        servers, _skipped = resolve_targets(s, sched.targets)
        with runner.admission(len(servers)) as admission:
            job = _job(s, sched, servers, planned=now, by=by, late=False, owner=admission.owner)
            firing = _firing(s, sched, now, "fired", now=now, job=job, note="run by hand", by=by)
            _audit(s, sched, firing, [srv.name for srv in servers], actor=by)
            s.commit()
        admission.launch(job, servers)
        return Settled([firing], job)


# -- the claim's parts ----------------------------------------------------------------------
@dataclass
class _Plan:
    due: cron.Due
    next_at: dt.datetime | None  # None: the schedule stops (it is disabled)
    fire_at: dt.datetime | None = None  # the planned time a job is made for
    late: bool = False
    servers: list[Server] = field(default_factory=list)
    blocked: tuple[str, str] | None = None  # (state, note) when no job can be made
    broken: str | None = None  # the schedule itself cannot be read: why


def _lock(s: Session, schedule_id: int) -> Schedule | None:
    return s.scalars(select(Schedule).where(Schedule.id == schedule_id).with_for_update()).first()


def _plan(s: Session, sched: Schedule, now: dt.datetime, grace: float) -> _Plan:
    assert sched.next_at is not None
    try:
        spec = cron.parse(sched.cron, sched.timezone)
    except InvalidInput as e:  # the zone left the tz database after an upgrade, …
        # Nothing can be planned: one error row at this planned time, and stop the schedule
        # from coming round again (it needs an edit).
        return _Plan(
            due=cron.Due(None, 0, None, None, False, sched.next_at),
            next_at=None,
            broken=f"{e.message}; the schedule is disabled until it is edited",
        )
    due = cron.due(spec, sched.next_at, now, grace)
    plan = _Plan(due=due, next_at=due.next_at)
    if due.on_time is not None:
        plan.fire_at = due.on_time
    elif due.missed and sched.missed == "run_once":
        plan.fire_at, plan.late = due.missed_first, True
    if plan.fire_at is None:
        return plan
    if sched.skip_if_running:
        busy = _running_job(s, sched.id)
        if busy is not None:
            plan.blocked = ("skipped", f"the previous firing's job {busy} was still running")
            return plan
    try:
        plan.servers, _skipped = resolve_targets(s, sched.targets)
    except InvalidInput as e:
        plan.blocked = ("error", f"no job was made: {e.message}")
    return plan


def _write(
    s: Session, sched: Schedule, plan: _Plan, *, now: dt.datetime, owner: str | None
) -> Settled:
    out = Settled()
    due = plan.due
    if plan.broken is not None:
        # The schedule itself cannot be read (see _plan): record it and disable it.
        assert sched.next_at is not None
        f = _firing(s, sched, sched.next_at, "error", now=now, note=plan.broken)
        out.firings.append(f)
        _audit(s, sched, f, [])
        sched.enabled = False
        return out
    if due.missed and not plan.late:
        assert due.missed_first is not None
        note = _missed_note(sched, due, ran_late=False)
        f = _firing(s, sched, due.missed_first, "missed", now=now, note=note, missed=due.missed)
        out.firings.append(f)
        _audit(s, sched, f, [])
    if plan.fire_at is None:
        return out
    late_note = _missed_note(sched, due, ran_late=True) if plan.late else None
    missed = due.missed if plan.late else 0
    if plan.blocked is not None:
        state, why = plan.blocked
        f = _firing(s, sched, plan.fire_at, state, now=now, note=_join(late_note, why),
                    missed=missed)  # fmt: skip
        out.firings.append(f)
        _audit(s, sched, f, [])
        return out
    job = _job(s, sched, plan.servers, planned=plan.fire_at, by=ACTOR, late=plan.late,
               owner=owner)  # fmt: skip
    f = _firing(s, sched, plan.fire_at, "fired", now=now, job=job, note=late_note, missed=missed)
    out.firings.append(f)
    out.job = job
    _audit(s, sched, f, [srv.name for srv in plan.servers])
    return out


def _advance(s: Session, sched: Schedule, next_at: dt.datetime | None) -> bool:
    """Move ``next_at`` on, only from the value this claim read (its guard)."""
    old = sched.next_at
    s.flush()  # the firing rows first: a duplicate fails here, before anything moves
    done = s.execute(
        update(Schedule)
        .where(Schedule.id == sched.id, Schedule.next_at == old)
        .values(next_at=next_at, enabled=sched.enabled)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(done, "rowcount", 0))


def _running_job(s: Session, schedule_id: int) -> int | None:
    """The job of the schedule's last firing if it has not ended."""
    return s.scalar(
        select(Job.id)
        .join(Firing, Firing.job_id == Job.id)
        .where(Firing.schedule_id == schedule_id, Job.state.in_(("queued", "running")))
        .order_by(Firing.id.desc())
        .limit(1)
    )


def _job(
    s: Session,
    sched: Schedule,
    servers: list[Server],
    *,
    planned: dt.datetime,
    by: str,
    late: bool,
    owner: str | None,
) -> Job:
    command = RemoteCommand(
        cmd=sched.cmd,
        stdin=sched.stdin,
        env=dict(sched.env or {}),
        cwd=sched.cwd,
        timeout=sched.timeout,
        title=f"schedule {sched.name}",
    )
    meta: dict[str, Any] = {
        "schedule_id": sched.id,
        "schedule": sched.name,
        "planned_at": iso(planned),
        "late": late,
    }
    if by != ACTOR:
        meta["by_hand"] = by
    return create_job(
        s,
        command,
        servers,
        created_by=f"schedule:{sched.name}"[:64],
        kind=KIND,
        targets=dict(sched.targets),
        meta=meta,
        owner=owner,
    )


def _firing(
    s: Session,
    sched: Schedule,
    planned: dt.datetime,
    state: str,
    *,
    now: dt.datetime,
    job: Job | None = None,
    note: str | None = None,
    missed: int = 0,
    by: str = ACTOR,
) -> Firing:
    f = Firing(
        schedule_id=sched.id,
        planned_at=planned,
        state=state,
        job_id=job.id if job is not None else None,
        note=note[:MAX_NOTE] if note else None,
        missed_count=missed,
        by=by[:64],
        created_at=now,
    )
    s.add(f)
    return f


def _missed_note(sched: Schedule, due: cron.Due, *, ran_late: bool) -> str:
    count = f"{due.missed}{'+' if due.missed_more else ''}"
    span = iso(due.missed_first)
    if due.missed > 1 and due.missed_last is not None:
        span = f"{span} … {iso(due.missed_last)}"
    what = "planned time" if due.missed == 1 else "planned times"
    head = f"the server was not running at {count} {what} ({span})"
    if ran_late:
        return f"{head}; ran once, late (policy run_once)"
    if sched.missed == "run_once" and due.on_time is not None:
        return f"{head}; not run: the firing due now ran on time instead (policy run_once)"
    return f"{head}; not run (policy skip)"


def _join(a: str | None, b: str) -> str:
    return f"{a}; {b}" if a else b


def _audit(
    s: Session, sched: Schedule, firing: Firing, hosts: list[str], actor: str = ACTOR
) -> None:
    result = firing.state + (f" job {firing.job_id}" if firing.job_id else "")
    audit_write(
        s,
        actor=actor,
        source=ACTOR,
        action=f"schedule.{firing.state}",
        target=f"schedule {sched.name}",
        hosts=hosts,
        detail={
            "schedule_id": sched.id,
            "planned_at": iso(firing.planned_at),
            "job": firing.job_id,
            "note": firing.note,
        },
        result=result,
    )

"""The runner's journal: what it writes to the database, and when (run on its one database
thread; runner.py has the loop).

- `claim` marks queued runs ``running`` with ``sent_at`` *before* they are sent, so after a
  crash every run an agent may have seen is ``running`` and is re-attached (`recover`), never
  sent again.
- `store` writes finished runs (first write wins), their jobs' and servers' states, and the
  audit line of a job that ended.

Both return the live events to publish after their commit. The hot-path statements are
prepared Core SQL, built once (`_Statements`): building a statement costs more than running
it on SQLite.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from types import SimpleNamespace
from typing import Any, cast

from sqlalchemy import Table, bindparam, case, func, null, or_, select, update
from sqlalchemy.orm import Session

from kernel.server.audit.log import write as audit_write
from kernel.server.core.db import Database, UTCDateTime, utcnow
from kernel.server.jobs.conversation import Final, RunTask
from kernel.server.jobs.service import refresh_job_state
from kernel.server.jobs.shapes import job_json, run_json
from kernel.server.jobs.states import TERMINAL, summary
from kernel.server.models.jobs import Job, Run
from kernel.server.models.servers import Server

log = logging.getLogger("kernel.server.jobs.runner")
LAST_SEEN_STEP = 5.0  # a server's last_seen is moved on by runs at most this often (seconds)
Event = tuple[int, str, dict[str, Any]]  # job id, type, data: what EventBus.publish takes
# What else must happen in the transaction that stores a run of a given job kind (e.g.
# "init": the next script of the chain); True when it queued more work.
AfterRun = Callable[[Session, Job, Run], bool]


def adopt(db: Database, me: str, live: Sequence[str]) -> list[RunTask]:
    """Runs left ``running`` by a replica that is gone (a previous process of this server, or
    a replica that died): they become ``me``'s, to re-attach to by their id."""
    with db.session() as s:
        rows = s.execute(
            select(Run, Job, Server)
            .join(Job, Run.job_id == Job.id)
            .join(Server, Run.server_id == Server.id)
            .where(Run.state == "running", or_(Run.owner.is_(None), Run.owner.not_in(live)))
            .with_for_update(skip_locked=True, of=Run)
        ).all()
        for run, _job, _srv in rows:
            run.owner = me
        if rows:
            log.info("re-attaching %d run(s) whose replica is gone", len(rows))
        return [RunTask.of(run, job, srv) for run, job, srv in rows]


def cancelled(db: Database, me: str) -> list[str]:
    """This replica's runs in flight whose job was cancelled (maybe through another
    replica, which could not tell this one's runner directly)."""
    with db.reading() as s:
        return list(
            s.scalars(
                select(Run.id)
                .join(Job, Run.job_id == Job.id)
                .where(Run.state == "running", Run.owner == me, Job.cancel_requested.is_(True))
            )
        )


def claim(db: Database, limit: int, me: str) -> tuple[list[RunTask], list[Event]]:
    """Journal up to ``limit`` queued runs as sent (``running``, ``sent_at``) before they
    are sent; the tasks to send, and the events to publish."""
    now = utcnow()
    events: list[Event] = []
    tasks: list[RunTask] = []
    with db.session() as s:
        rows = s.execute(
            select(Run, Job, Server)
            .join(Job, Run.job_id == Job.id)
            .join(Server, Run.server_id == Server.id)
            .where(Run.state == "queued")
            .order_by(Run.job_id, Run.server_name)
            .limit(limit)
            .with_for_update(skip_locked=True, of=Run)
        ).all()
        jobs: dict[int, Job] = {}
        sent: set[int] = set()  # jobs with a run sent now
        for run, job, srv in rows:
            if job.cancel_requested or srv.removed_at is not None or not srv.agent_url:
                run.state, run.finished_at = "cancelled", now
                run.error = "job cancelled" if job.cancel_requested else "server removed"
            else:
                run.state, run.sent_at = "running", now  # the journal: "maybe sent"
                run.owner = me
                tasks.append(RunTask.of(run, job, srv))
                sent.add(job.id)
            jobs[job.id] = job
            events.append((job.id, "run", {"run": run_json(run)}))
        for job in jobs.values():
            if job.id in sent:
                # A running run makes the job running, whatever its other runs: no need
                # to read them (jobstate.job_state).
                if job.state != "running":
                    job.state = "running"
                    job.started_at = job.started_at or now
                    events.append((job.id, "job", {"job": job_json(job)}))
            else:
                states = s.scalars(select(Run.state).where(Run.job_id == job.id)).all()
                events += _job_changed(s, job, states)
    return tasks, events


def store(
    db: Database, batch: list[tuple[RunTask, Final]], after_run: Mapping[str, AfterRun]
) -> tuple[list[Event], bool]:
    """Write finished runs, bring their jobs and servers up to date; the events to publish,
    and whether an ``after_run`` hook queued more work.

    On the hot path of every job, so written as a few prepared Core statements rather
    than ORM loads and flushes (which cost a single-run job a few ms more): one UPDATE per
    run that is not final yet (RETURNING the row for its event), one read of the jobs and
    one count of their runs' states (their names only when a job ends), an UPDATE per job
    that changes, one per kind of news about servers."""
    events: list[Event] = []
    follow_up = False
    now = utcnow()
    with db.session() as s:
        conn = s.connection()
        stored: list[Any] = []
        servers: dict[int, Final] = {}
        for task, final in batch:
            row = conn.execute(_SQL.finish_run, final.columns(task, now)).mappings().first()
            if row is None:  # already final (e.g. cancelled meanwhile): first write wins
                continue
            stored.append(SimpleNamespace(**row))
            servers[task.server_id] = final
        if not stored:
            return [], False
        _note_servers(conn, servers, now)
        job_ids = sorted({run.job_id for run in stored})
        jobs = {
            row["id"]: SimpleNamespace(**row)
            for row in conn.execute(_SQL.jobs, {"ids": job_ids}).mappings()
        }
        # The states as counts, not a row per run: a 10 000-host job's batches would each
        # read 10 000 rows. Names are read only for the audit line of a job that ends.
        states_of: dict[int, list[str]] = {}
        for job_id, state, n in conn.execute(_SQL.run_states, {"ids": job_ids}):
            states_of.setdefault(job_id, []).extend([state] * n)
        for run in stored:
            events.append((run.job_id, "run", {"run": run_json(run)}))
        for job_id, job in jobs.items():
            before = (job.state, job.started_at, job.finished_at)
            events += _job_changed(
                s, job, states_of.get(job_id, []), hosts=partial(_run_names, conn, job_id)
            )
            if (job.state, job.started_at, job.finished_at) != before:
                conn.execute(
                    _SQL.job_state,
                    {
                        "job_id": job_id,
                        "state": job.state,
                        "started_at": job.started_at,
                        "finished_at": job.finished_at,
                    },
                )
        for run in stored:
            hook = after_run.get(jobs[run.job_id].kind)
            if hook is not None:
                # Hooks are ORM code: load what they need (a rare path: init scripts).
                orm_job, orm_run = s.get(Job, run.job_id), s.get(Run, run.id)
                if orm_job is not None and orm_run is not None:
                    follow_up |= hook(s, orm_job, orm_run)
    return events, follow_up


class _Statements:
    """The store's statements, built once: building a Core statement costs more than
    running it on SQLite."""

    def __init__(self) -> None:
        runs, jobs, servers = (cast(Table, m.__table__) for m in (Run, Job, Server))
        now, cut = bindparam("now", type_=UTCDateTime()), bindparam("cut", type_=UTCDateTime())
        self.finish_run = (
            update(runs)
            .where(runs.c.id == bindparam("run_id"), runs.c.state.not_in(TERMINAL))
            .values(
                state=bindparam("state"),
                exit_code=bindparam("exit_code"),
                signal=bindparam("signal"),
                error=bindparam("error"),
                stdout=bindparam("stdout"),
                stderr=bindparam("stderr"),
                truncated=bindparam("truncated"),
                started_at=func.coalesce(
                    bindparam("started_at", type_=UTCDateTime()), runs.c.started_at
                ),
                finished_at=bindparam("finished_at", type_=UTCDateTime()),
                duration=bindparam("duration"),
            )
            .returning(*(runs.c[name] for name in RUN_EVENT_COLUMNS))
        )
        self.jobs = select(jobs).where(jobs.c.id.in_(bindparam("ids", expanding=True)))
        self.run_states = (
            select(runs.c.job_id, runs.c.state, func.count())
            .where(runs.c.job_id.in_(bindparam("ids", expanding=True)))
            .group_by(runs.c.job_id, runs.c.state)
        )
        self.run_names = (
            select(runs.c.server_name)
            .where(runs.c.job_id == bindparam("id"))
            .order_by(runs.c.server_name)
        )
        self.job_state = (
            update(jobs)
            .where(jobs.c.id == bindparam("job_id"))
            .values(
                state=bindparam("state"),
                started_at=bindparam("started_at", type_=UTCDateTime()),
                finished_at=bindparam("finished_at", type_=UTCDateTime()),
            )
        )
        self.server_unreachable = (
            update(servers)
            .where(servers.c.id == bindparam("server_id"))
            .values(
                state=case((servers.c.state == "online", "offline"), else_=servers.c.state),
                last_error=bindparam("error"),
            )
        )
        stale = or_(servers.c.last_seen.is_(None), servers.c.last_seen < cut)
        offline = servers.c.state == "offline"
        self.server_answered = (
            update(servers)
            .where(servers.c.id == bindparam("server_id"), or_(stale, offline))
            .values(
                last_seen=case((stale, now), else_=servers.c.last_seen),
                state=case((offline, "online"), else_=servers.c.state),
                last_error=case((offline, null()), else_=servers.c.last_error),
            )
        )


RUN_EVENT_COLUMNS = (
    "id", "job_id", "server_id", "server_name", "state", "exit_code", "signal", "truncated",
    "error", "sent_at", "started_at", "finished_at", "duration",
)  # fmt: skip
_SQL = _Statements()


def _job_changed(
    s: Any,
    job: Any,
    states: Sequence[str],
    *,
    hosts: Callable[[], Sequence[str]] | None = None,
) -> list[Event]:
    """Bring a job (a Job, or the store's plain copy of a row) up to date with its runs
    (``states``: each one's state as it is now); the events that says, and the audit line
    naming the ``hosts()`` if it just ended (when ``hosts`` is given)."""
    was = job.state
    ended = refresh_job_state(s, job, states)
    events: list[Event] = []
    if job.state != was:
        events.append((job.id, "job", {"job": job_json(job)}))
    if ended:
        counts = summary(states)
        events.append((job.id, "end", {"state": job.state, "summary": counts}))
        if hosts is not None:
            _audit_end(s, job, hosts(), counts)
    return events


def _run_names(conn: Any, job_id: int) -> list[str]:
    return list(conn.execute(_SQL.run_names, {"id": job_id}).scalars())


def _note_servers(conn: Any, finals: Mapping[int, Final], now: dt.datetime) -> None:
    """What runs tell about their servers: each answered (online, and last_seen — to the few
    seconds: an UPDATE per finished run would cost every result write) or did not
    (offline, with the error). A lost run says neither. One executemany per kind (psycopg
    pipelines it), not a round trip per server: a 10 000-host job is 10 000 of these."""
    cut = now - dt.timedelta(seconds=LAST_SEEN_STEP)
    answered = [
        {"server_id": sid, "now": now, "cut": cut}
        for sid, final in finals.items()
        if final.state not in ("lost", "unreachable")
    ]
    unreachable = [
        {"server_id": sid, "error": final.error}
        for sid, final in finals.items()
        if final.state == "unreachable"
    ]
    if unreachable:
        conn.execute(_SQL.server_unreachable, unreachable)
    if answered:
        conn.execute(_SQL.server_answered, answered)


def _audit_end(s: Any, job: Job, hosts: Sequence[str], all_counts: dict[str, int]) -> None:
    counts = {k: v for k, v in all_counts.items() if v}
    audit_write(
        s,
        actor=job.created_by or "-",
        source="runner",
        action="job.finished",
        target=f"job {job.id}",
        hosts=list(hosts),
        detail={"title": job.title[:200], "summary": counts},
        result=job.state + " " + ", ".join(f"{k}={v}" for k, v in counts.items()),
    )

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
from kernel.server.jobs.states import RUN_STATES, TERMINAL, summary
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
    are sent; the tasks to send, and the events to publish.

    Prepared Core statements, as in `store`: one read of the runs (locked, skipping those
    another replica is claiming) with their servers, one of their jobs, and an executemany
    per kind of change — the ORM's objects and flush cost a 10 000-host job ~0.1 ms a run."""
    now = utcnow()
    events: list[Event] = []
    tasks: list[RunTask] = []
    with db.session() as s:
        conn = s.connection()
        rows: list[Any] = [
            SimpleNamespace(**r) for r in conn.execute(_SQL.claimable, {"n": limit}).mappings()
        ]
        if not rows:
            return [], []
        jobs = _jobs(conn, sorted({r.job_id for r in rows}))
        sent: set[int] = set()  # jobs with a run sent now
        running: list[dict[str, Any]] = []
        ended: list[dict[str, Any]] = []
        for run in rows:
            job = jobs[run.job_id]
            if job.cancel_requested or run.removed_at is not None or not run.agent_url:
                run.state, run.finished_at = "cancelled", now
                run.error = "job cancelled" if job.cancel_requested else "server removed"
                ended.append({"run_id": run.id, "error": run.error, "now": now})
            else:
                run.state, run.sent_at = "running", now  # the journal: "maybe sent"
                running.append({"run_id": run.id, "now": now, "owner": me})
                tasks.append(RunTask.of(run, job, _server_of(run)))
                sent.add(job.id)
            events.append((job.id, "run", {"run": run_json(run)}))
        if running:
            conn.execute(_SQL.claim_run, running)
        if ended:
            conn.execute(_SQL.cancel_run, ended)
        waiting = [job_id for job_id in jobs if job_id not in sent]
        states_of = _run_states(conn, waiting) if waiting else {}
        for job_id, job in jobs.items():
            before = (job.state, job.started_at, job.finished_at)
            if job_id in sent:
                # A running run makes the job running, whatever its other runs: no need
                # to read them (jobstate.job_state).
                if job.state != "running":
                    job.state = "running"
                    job.started_at = job.started_at or now
                    events.append((job.id, "job", {"job": job_json(job)}))
            else:
                events += _job_changed(s, job, states_of.get(job_id, []))
            _write_job(conn, job, before)
    return tasks, events


def store(
    db: Database, batch: list[tuple[RunTask, Final]], after_run: Mapping[str, AfterRun]
) -> tuple[list[Event], bool]:
    """Write finished runs, bring their jobs and servers up to date; the events to publish,
    and whether an ``after_run`` hook queued more work.

    On the hot path of every job, so written as a few prepared Core statements rather
    than ORM loads and flushes: one read (locking them) of which of the runs are not final
    yet — first write wins: a run cancelled meanwhile stays cancelled —, one executemany
    writing those (psycopg pipelines it: a batch of 500 runs is a round trip or two, not
    500), one read of the jobs and one count of their runs' states (their names only when
    a job ends), an UPDATE per job that changes, one executemany per kind of news about
    servers. The run events are made of what the runner knows (the task and its final),
    which is what the row now holds."""
    events: list[Event] = []
    follow_up = False
    now = utcnow()
    with db.session() as s:
        conn = s.connection()
        open_ = _not_final(conn, [task.run_id for task, _ in batch])  # id: its started_at
        stored: list[Any] = []
        params: list[dict[str, Any]] = []
        servers: dict[int, Final] = {}
        for task, final in batch:
            if task.run_id not in open_:  # already final (e.g. cancelled): first write wins
                continue
            was_started = open_.pop(task.run_id)  # the same run twice: the first is kept
            values = final.columns(task, now)
            params.append(values)
            stored.append(_run_row(task, values, was_started))
            servers[task.server_id] = final
        if not stored:
            return [], False
        conn.execute(_SQL.finish_run, params)
        _note_servers(conn, servers, now)
        job_ids = sorted({run.job_id for run in stored})
        jobs = _jobs(conn, job_ids)
        # The states as counts, not a row per run: a 10 000-host job's batches would each
        # read 10 000 rows. Names are read only for the audit line of a job that ends.
        states_of = _run_states(conn, job_ids)
        for run in stored:
            events.append((run.job_id, "run", {"run": run_json(run)}))
        for job_id, job in jobs.items():
            before = (job.state, job.started_at, job.finished_at)
            events += _job_changed(
                s, job, states_of.get(job_id, []), hosts=partial(_run_names, conn, job_id)
            )
            _write_job(conn, job, before)
        for run in stored:
            hook = after_run.get(jobs[run.job_id].kind)
            if hook is not None:
                # Hooks are ORM code: load what they need (a rare path: init scripts).
                orm_job, orm_run = s.get(Job, run.job_id), s.get(Run, run.id)
                if orm_job is not None and orm_run is not None:
                    follow_up |= hook(s, orm_job, orm_run)
    return events, follow_up


IN_CHUNK = 1000  # ids per IN (…) list: far below any driver's parameter limit


def _not_final(conn: Any, run_ids: Sequence[str]) -> dict[str, dt.datetime | None]:
    """Which of these runs are not final yet (with their ``started_at``), their rows locked
    until the commit (on PostgreSQL; SQLite's transaction holds its write lock already)."""
    found: dict[str, dt.datetime | None] = {}
    unique = sorted(set(run_ids))
    for i in range(0, len(unique), IN_CHUNK):
        found.update(conn.execute(_SQL.not_final, {"ids": unique[i : i + IN_CHUNK]}).all())
    return found


def _run_row(task: RunTask, values: Mapping[str, Any], was_started: Any) -> SimpleNamespace:
    """The stored run as its event shows it (`RUN_EVENT_COLUMNS`), from the values written."""
    return SimpleNamespace(
        id=task.run_id,
        job_id=task.job_id,
        server_id=task.server_id,
        server_name=task.server_name,
        state=values["state"],
        exit_code=values["exit_code"],
        signal=values["signal"],
        truncated=values["truncated"],
        error=values["error"],
        sent_at=task.sent_at,
        started_at=values["started_at"] or was_started,  # the UPDATE's coalesce
        finished_at=values["finished_at"],
        duration=values["duration"],
    )


def _jobs(conn: Any, job_ids: Sequence[int]) -> dict[int, Any]:
    """The jobs' rows as plain objects (what `job_json` and `RunTask.of` read)."""
    return {
        row["id"]: SimpleNamespace(**row)
        for row in conn.execute(_SQL.jobs, {"ids": list(job_ids)}).mappings()
    }


def _run_states(conn: Any, job_ids: Sequence[int]) -> dict[int, list[str]]:
    states_of: dict[int, list[str]] = {}
    for job_id, state, n in conn.execute(_SQL.run_states, {"ids": list(job_ids)}):
        states_of.setdefault(job_id, []).extend([state] * n)
    return states_of


def _write_job(conn: Any, job: Any, before: tuple[Any, ...]) -> None:
    if (job.state, job.started_at, job.finished_at) != before:
        conn.execute(
            _SQL.job_state,
            {
                "job_id": job.id,
                "state": job.state,
                "started_at": job.started_at,
                "finished_at": job.finished_at,
            },
        )


def _server_of(row: Any) -> Any:
    """What `RunTask.of` reads of a server, from a claimed row."""
    return SimpleNamespace(
        id=row.server_id,
        agent_url=row.agent_url,
        agent_key=row.agent_key,
        tls_fingerprint=row.tls_fingerprint,
    )


class _Statements:
    """The store's statements, built once: building a Core statement costs more than
    running it on SQLite."""

    def __init__(self) -> None:
        runs, jobs, servers = (cast(Table, m.__table__) for m in (Run, Job, Server))
        now, cut = bindparam("now", type_=UTCDateTime()), bindparam("cut", type_=UTCDateTime())
        self.claimable = (
            select(
                *(runs.c[name] for name in RUN_EVENT_COLUMNS),
                servers.c.agent_url,
                servers.c.agent_key,
                servers.c.tls_fingerprint,
                servers.c.removed_at,
            )
            .join(servers, runs.c.server_id == servers.c.id)
            .where(runs.c.state == "queued")
            .order_by(runs.c.job_id, runs.c.server_name)
            .limit(bindparam("n"))
            .with_for_update(skip_locked=True, of=runs)
        )
        self.claim_run = (
            update(runs)
            .where(runs.c.id == bindparam("run_id"))
            .values(state="running", sent_at=now, owner=bindparam("owner"))
        )
        self.cancel_run = (
            update(runs)
            .where(runs.c.id == bindparam("run_id"))
            .values(state="cancelled", finished_at=now, error=bindparam("error"))
        )
        # Not final yet, spelled with "=", not NOT IN (…): a list parameter cannot be part of
        # an executemany. The UPDATE keeps it though `not_final` locked the rows: a run is
        # final once, whatever reads came before.
        open_state = or_(*(runs.c.state == state for state in RUN_STATES if state not in TERMINAL))
        self.not_final = (
            select(runs.c.id, runs.c.started_at)
            .where(runs.c.id.in_(bindparam("ids", expanding=True)), open_state)
            .with_for_update()
        )
        self.finish_run = (
            update(runs)
            .where(runs.c.id == bindparam("run_id"), open_state)
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

"""The job runner: one asyncio event loop in a background thread of the server process.

Runs wait in the database as ``queued`` (durable: a SIGKILL loses nothing acknowledged). The
runner claims as many as it has free slots, journals them as ``running`` with ``sent_at`` *in
the database first*, and only then sends them to their agents, with the run id as the agent's
exec id. So after a crash every run the agent may have seen is ``running`` in the database, and
a restarted runner re-attaches to it with ``GET /api/v2/exec/<id>``; the agent's idempotent ids
mean nothing runs twice, and a run no agent knows ends as ``lost`` with a reason.

Results are written in batches by one writer (one database thread), so 100 hosts answering at
once cost a handful of transactions, not a hundred.

Direct hand-off: when this process's runner has free slots for all of a new job's runs, the
request that creates the job reserves them (`Runner.admission`), writes the runs ``running``
with ``sent_at`` in its own transaction (the same journal entry a claim writes), and after
its commit hands them to the loop — no wake-up, no claim transaction. Without free slots, or
with no runner in this process, runs are queued and claimed as above.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from types import SimpleNamespace, TracebackType
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Table, bindparam, case, func, null, or_, select, update
from sqlalchemy.orm import Session

from kernel.server.audit.log import write as audit_write
from kernel.server.core.db import Database, UTCDateTime, utcnow
from kernel.server.core.events import EventBus
from kernel.server.core.loopthread import LoopThread
from kernel.server.jobs.conversation import AgentRun, Final, RunTask
from kernel.server.jobs.service import refresh_job_state
from kernel.server.jobs.shapes import job_json, run_json
from kernel.server.jobs.states import TERMINAL, summary
from kernel.server.models.jobs import Job, Run
from kernel.server.models.servers import Server

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)
IDLE_POLL = 1.0  # seconds between looks for work queued by another process (CLI, replica)
LAST_SEEN_STEP = 5.0  # a server's last_seen is moved on by runs at most this often (seconds)


class Runner(LoopThread):
    name = "kernel-runner"

    def __init__(self, config: Mapping[str, Any], db: Database, bus: EventBus) -> None:
        super().__init__()
        self.db = db
        self.bus = bus
        cfg = config
        # What else must happen in the transaction that stores a run of a given job kind
        # (e.g. "init": the next script of the chain); True when it queued more work.
        self.after_run: dict[str, Callable[[Session, Job, Run], bool]] = {}
        self.concurrency = int(cfg["JOB_CONCURRENCY"])
        self.agent = AgentRun(
            output_cap=int(cfg["OUTPUT_CAP"]),
            start_timeout=float(cfg["RUN_START_TIMEOUT"]),
            connect_timeout=float(cfg["AGENT_CONNECT_TIMEOUT"]),
            publish=self.bus.publish,
        )
        self._active: dict[str, tuple[RunTask, asyncio.Task[None]]] = {}
        self._done: list[tuple[RunTask, Final]] = []
        # True when the last claim filled every free slot, so more runs may be waiting: only
        # then does a finished run wake the claimer. Otherwise a finished run would cost a
        # useless claim transaction (SQLite write lock, the one database thread) right when
        # the next job's POST wants them.
        self._saturated = False
        # Slots promised to requests that are creating runs as running (`admission`), not yet
        # in `_active`: guarded by a lock, read by the loop when it counts its free slots.
        self._reserve_lock = threading.Lock()
        self._reserved = 0

    # -- called from other threads -----------------------------------------------------------
    # start() / stop() / running: LoopThread. Stopping does not touch runs in flight: they stay
    # ``running`` and are re-attached by the next start, exactly as after a crash.

    def wake(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def cancel_runs(self, run_ids: list[str]) -> None:
        if self._loop is not None and run_ids:
            self._loop.call_soon_threadsafe(lambda: self._spawn(self._cancel(run_ids), "cancel"))

    def admission(self, runs: int) -> Admission:
        """For a request about to create ``runs`` runs: reserves that many slots if free."""
        return Admission(self, self._reserve(runs))

    def _reserve(self, n: int) -> int:
        if n <= 0 or self._loop is None or not self.running:
            return 0
        with self._reserve_lock:
            if self.concurrency - len(self._active) - self._reserved < n:
                return 0
            self._reserved += n
            return n

    def _release(self, n: int) -> None:
        with self._reserve_lock:
            self._reserved -= n

    def _submit(self, tasks: list[RunTask], reserved: int) -> None:
        def accept() -> None:
            for task in tasks:
                self._start(task, reattach=False)
            self._release(reserved)

        loop = self._loop
        try:
            if loop is None:
                raise RuntimeError("runner stopped")
            loop.call_soon_threadsafe(accept)
        except RuntimeError:  # stopped meanwhile: the runs are re-attached at the next start
            self._release(reserved)

    # -- inside the loop -----------------------------------------------------------------------
    def _prepare(self) -> None:
        self._wake = asyncio.Event()
        self._flush = asyncio.Event()

    async def _close(self) -> None:
        await self.agent.close()

    async def _main(self) -> None:
        writer = self._spawn(self._writer(), "writer")
        try:
            recovered = False
            while not self._stopping.is_set():
                self._wake.clear()  # before looking: a job queued meanwhile wakes us again
                free = 0
                try:
                    if not recovered:
                        for task in await self._db(self._recover):
                            self._start(task, reattach=True)
                        recovered = True
                    # Counted after the recovery: re-attached runs hold slots too.
                    free = self.concurrency - len(self._active) - self._reserved
                    claimed = await self._db(self._claim, free) if free > 0 else []
                except Exception:  # e.g. the database is down: keep trying, loudly
                    log.exception("the job runner cannot read the database; retrying")
                    claimed = []
                for task in claimed:
                    self._start(task, reattach=False)
                self._saturated = free <= 0 or len(claimed) >= free
                if len(claimed) < free or free <= 0:
                    waiters = [
                        asyncio.ensure_future(self._wake.wait()),
                        asyncio.ensure_future(self._stopping.wait()),
                    ]
                    try:
                        await asyncio.wait(
                            waiters, timeout=IDLE_POLL, return_when=asyncio.FIRST_COMPLETED
                        )
                    finally:
                        for w in waiters:
                            w.cancel()
        finally:
            for _, t in list(self._active.values()):
                t.cancel()
            await asyncio.gather(*(t for _, t in self._active.values()), return_exceptions=True)
            self._flush.set()
            await asyncio.sleep(0)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            if self._done:
                await self._db(self._store, self._done)

    def _start(self, task: RunTask, *, reattach: bool) -> None:
        coro = self.agent.reattach(task) if reattach else self.agent.execute(task)
        t = asyncio.get_running_loop().create_task(self._finish_when_done(task, coro))
        self._active[task.run_id] = (task, t)

    async def _finish_when_done(self, task: RunTask, coro: Any) -> None:
        try:
            final = await coro
        except asyncio.CancelledError:
            if not task.cancel_requested:
                raise  # shutting down: leave the run for the next start to re-attach
            final = Final("cancelled", error="cancelled; the agent could not be told")
        except Exception as e:  # a bug here must end the run, not leave it running
            log.exception("run %s failed inside the runner", task.run_id)
            final = Final("lost", error=f"runner error: {type(e).__name__}: {e}")
        finally:
            self._active.pop(task.run_id, None)
        self._done.append((task, final))
        self._flush.set()
        if self._saturated:
            self._wake.set()  # a slot is free and more runs may be queued

    async def _writer(self) -> None:
        while True:
            await self._flush.wait()
            # Answers that arrive while a batch is being written wait for the next one: under
            # load batches grow by themselves, and a lone answer is written at once.
            await asyncio.sleep(0)
            self._flush.clear()
            batch, self._done = self._done, []
            if batch:
                try:
                    await self._db(self._store, batch)
                except Exception:
                    log.exception("could not store %d run results; retrying", len(batch))
                    self._done = batch + self._done
                    await asyncio.sleep(1)
                    self._flush.set()

    async def _cancel(self, run_ids: list[str]) -> None:
        for rid in run_ids:
            entry = self._active.get(rid)
            if entry is None:
                continue
            task, t = entry
            task.cancel_requested = True
            if not await self.agent.cancel(task):
                t.cancel()

    # -- database side (runs in the runner's one database thread) ----------------------------
    def _recover(self) -> list[RunTask]:
        with self.db.session() as s:
            rows = s.execute(
                select(Run, Job, Server)
                .join(Job, Run.job_id == Job.id)
                .join(Server, Run.server_id == Server.id)
                .where(Run.state == "running")
            ).all()
            if rows:
                log.info("re-attaching %d run(s) left running by a previous process", len(rows))
            return [RunTask.of(run, job, srv) for run, job, srv in rows]

    def _claim(self, limit: int) -> list[RunTask]:
        now = utcnow()
        events: list[tuple[int, str, dict[str, Any]]] = []
        tasks: list[RunTask] = []
        with self.db.session() as s:
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
                    states = s.execute(
                        select(Run.id, Run.server_name, Run.state).where(Run.job_id == job.id)
                    ).all()
                    events += _job_changed(s, job, [(i, n, st) for i, n, st in states])
        for job_id, type_, data in events:
            self.bus.publish(job_id, type_, **data)
        return tasks

    def _store(self, batch: list[tuple[RunTask, Final]]) -> None:
        """Write finished runs, bring their jobs and servers up to date, publish the events.

        On the hot path of every job, so written as a few prepared Core statements rather
        than ORM loads and flushes (which cost a single-run job a few ms more): one UPDATE per
        run that is not final yet (RETURNING the row for its event), one read of the jobs and
        one of their runs' states, an UPDATE per job that changes, one per server with news."""
        events: list[tuple[int, str, dict[str, Any]]] = []
        follow_up = False
        now = utcnow()
        with self.db.session() as s:
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
                return
            for server_id, final in servers.items():
                _note_server(conn, server_id, final, now)
            job_ids = sorted({run.job_id for run in stored})
            jobs = {
                row["id"]: SimpleNamespace(**row)
                for row in conn.execute(_SQL.jobs, {"ids": job_ids}).mappings()
            }
            runs_of: dict[int, list[tuple[str, str, str]]] = {}
            for job_id, run_id, name, state in conn.execute(_SQL.run_states, {"ids": job_ids}):
                runs_of.setdefault(job_id, []).append((run_id, name, state))
            for run in stored:
                events.append((run.job_id, "run", {"run": run_json(run)}))
            for job_id, job in jobs.items():
                before = (job.state, job.started_at, job.finished_at)
                events += _job_changed(s, job, runs_of.get(job_id, []), audit=True)
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
                hook = self.after_run.get(jobs[run.job_id].kind)
                if hook is not None:
                    # Hooks are ORM code: load what they need (a rare path: init scripts).
                    orm_job, orm_run = s.get(Job, run.job_id), s.get(Run, run.id)
                    if orm_job is not None and orm_run is not None:
                        follow_up |= hook(s, orm_job, orm_run)
        for job_id, type_, data in events:
            self.bus.publish(job_id, type_, **data)
        if follow_up:
            self.wake()


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
            select(runs.c.job_id, runs.c.id, runs.c.server_name, runs.c.state)
            .where(runs.c.job_id.in_(bindparam("ids", expanding=True)))
            .order_by(runs.c.job_id, runs.c.server_name)
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


class Admission:
    """A new job's way into the runner (see the module doc): ``direct`` says whether its runs
    are to be created running; `launch` after the commit starts them (or wakes the claimer).
    Leaving the ``with`` block by an exception gives the reserved slots back."""

    def __init__(self, runner: Runner, reserved: int) -> None:
        self.runner = runner
        self.reserved = reserved

    @property
    def direct(self) -> bool:
        return self.reserved > 0

    def __enter__(self) -> Admission:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None and self.reserved:
            self.runner._release(self.reserved)
            self.reserved = 0

    def launch(self, job: Job, servers: Sequence[Server]) -> None:
        """After the commit: hand the job's runs to the loop, or wake the claimer."""
        if not self.reserved:
            self.runner.wake()
            return
        by_id = {srv.id: srv for srv in servers}
        tasks = [RunTask.of(run, job, by_id[run.server_id]) for run in job.runs]
        reserved, self.reserved = self.reserved, 0
        self.runner._submit(tasks, reserved)
        bus = self.runner.bus  # what a claim would have published
        for run in job.runs:
            bus.publish(job.id, "run", run=run_json(run))
        bus.publish(job.id, "job", job=job_json(job))


def _job_changed(
    s: Any, job: Any, rows: Sequence[tuple[str, str, str]], *, audit: bool = False
) -> list[tuple[int, str, dict[str, Any]]]:
    """Bring a job (a Job, or the store's plain copy of a row) up to date with its runs
    (``rows``: id, server name and state of each, as they are now); the events that says,
    and the audit line if it just ended (``audit``)."""
    states = [state for _, _, state in rows]
    was = job.state
    ended = refresh_job_state(s, job, states)
    events: list[tuple[int, str, dict[str, Any]]] = []
    if job.state != was:
        events.append((job.id, "job", {"job": job_json(job)}))
    if ended:
        counts = summary(states)
        events.append((job.id, "end", {"state": job.state, "summary": counts}))
        if audit:
            _audit_end(s, job, [name for _, name, _ in rows], counts)
    return events


def _note_server(conn: Any, server_id: int, final: Final, now: dt.datetime) -> None:
    """What a run tells about its server: it answered (online, and last_seen — to the few
    seconds: an UPDATE per finished run would cost every result write) or did not
    (offline, with the error). A lost run says neither."""
    if final.state == "lost":
        return
    if final.state == "unreachable":
        conn.execute(_SQL.server_unreachable, {"server_id": server_id, "error": final.error})
        return
    cut = now - dt.timedelta(seconds=LAST_SEEN_STEP)
    conn.execute(_SQL.server_answered, {"server_id": server_id, "now": now, "cut": cut})


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

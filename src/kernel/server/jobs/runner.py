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
import logging
import threading
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from kernel.server.cluster.membership import Membership
from kernel.server.core.db import Database, out_of_space
from kernel.server.core.events import EventBus
from kernel.server.core.loopthread import LoopThread
from kernel.server.jobs import journal
from kernel.server.jobs.conversation import AgentRun, Final, RunTask
from kernel.server.jobs.shapes import job_json, run_json
from kernel.server.models.jobs import Job
from kernel.server.models.servers import Server

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)
ADOPT_EVERY = 5.0  # seconds between looks for runs whose replica is gone
# Final states of a run that was never seen to start; a run cancelled meanwhile ends cancelled.
NOT_STARTED = ("unreachable", "lost")
IDLE_POLL = 1.0  # seconds between looks for work queued by another process (CLI, replica)


class Runner(LoopThread):
    name = "kernel-runner"

    def __init__(
        self, config: Mapping[str, Any], db: Database, bus: EventBus, membership: Membership
    ) -> None:
        super().__init__()
        self.db = db
        self.bus = bus
        self.membership = membership
        cfg = config
        # What else must happen in the transaction that stores a run of a given job kind
        # (e.g. "init": the next script of the chain); True when it queued more work.
        self.after_run: dict[str, journal.AfterRun] = {}
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
        self._recovered = threading.Event()  # set once the first recovery has run

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
        # Not before the recovery of a previous process's runs is done: it reads every run
        # that is `running`, and would take a run handed over meanwhile for one of those.
        if n <= 0 or self._loop is None or not self.running or not self._recovered.is_set():
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
            self._recovered.clear()
            loop = asyncio.get_running_loop()
            next_adopt = next_cancel_look = 0.0
            while not self._stopping.is_set():
                self._wake.clear()  # before looking: a job queued meanwhile wakes us again
                free = 0
                try:
                    if not self._recovered.is_set() or loop.time() >= next_adopt:
                        # At the start, then now and then: runs of replicas that are gone.
                        next_adopt = loop.time() + ADOPT_EVERY
                        for task in await self._db(self._adopt):
                            if task.run_id not in self._active:
                                self._start(task, reattach=True)
                        self._recovered.set()
                    if (
                        self._active
                        and not self.membership.single
                        and loop.time() >= next_cancel_look
                    ):
                        next_cancel_look = loop.time() + IDLE_POLL
                        # A job cancelled through another replica: its runs here are told
                        # by this look (the API there cannot reach this runner).
                        ids = await self._db(journal.cancelled, self.db, self.membership.id)
                        if ids:  # _cancel skips runs told already
                            self._spawn(self._cancel(ids), "cancel")
                    # Counted after the recovery: re-attached runs hold slots too.
                    free = self.concurrency - len(self._active) - self._reserved
                    claimed = await self._claim(free) if free > 0 else []
                except Exception as e:  # e.g. the database is down: keep trying, loudly
                    if out_of_space(e):
                        log.error("the job runner cannot journal runs: the disk is full")
                    else:
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
                await self._store(self._done)

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
        if task.cancel_requested and task.started_at is None and final.state in NOT_STARTED:
            final = Final("cancelled", error=f"cancelled before it started ({final.error})")
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
                    await self._store(batch)
                except Exception as e:
                    # Kept in memory and retried until they are written (a full disk, the
                    # database away); after a crash meanwhile the agents still have them.
                    if out_of_space(e):
                        log.error("could not store %d run results: the disk is full; "
                                  "retrying", len(batch))  # fmt: skip
                    else:
                        log.exception("could not store %d run results; retrying", len(batch))
                    self._done = batch + self._done
                    await asyncio.sleep(1)
                    self._flush.set()

    def _adopt(self) -> list[RunTask]:
        return journal.adopt(self.db, self.membership.id, self.membership.live())

    async def _claim(self, limit: int) -> list[RunTask]:
        tasks, events = await self._db(journal.claim, self.db, limit, self.membership.id)
        self._publish(events)
        return tasks

    async def _store(self, batch: list[tuple[RunTask, Final]]) -> None:
        events, follow_up = await self._db(journal.store, self.db, batch, self.after_run)
        self._publish(events)
        if follow_up:
            self.wake()

    def _publish(self, events: list[journal.Event]) -> None:
        for job_id, type_, data in events:
            self.bus.publish(job_id, type_, **data)

    async def _cancel(self, run_ids: list[str]) -> None:
        for rid in run_ids:
            entry = self._active.get(rid)
            if entry is None:
                continue
            task, t = entry
            if task.cancel_requested:
                continue
            task.cancel_requested = True
            if await self.agent.cancel(task):
                continue
            if task.started_at is None:
                # The agent does not know the run yet: the request may still be on its way.
                # The run is cancelled when the agent says it started (conversation.py), or
                # ends unreachable, which a cancelled run's final turns into cancelled.
                continue
            t.cancel()


class Admission:
    """A new job's way into the runner (see the module doc): ``owner`` says whether its runs
    are to be created running; `launch` after the commit starts them (or wakes the claimer).
    Leaving the ``with`` block by an exception gives the reserved slots back."""

    def __init__(self, runner: Runner, reserved: int) -> None:
        self.runner = runner
        self.reserved = reserved

    @property
    def owner(self) -> str | None:
        """This replica when the runs go straight to its runner, else None (they queue)."""
        return self.runner.membership.id if self.reserved > 0 else None

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

"""One run's conversation with its agent: send (streaming), re-attach, cancel.

Used by the runner inside its event loop; holds one kept-alive AsyncAgentClient per agent.
Timing rules: an agent must accept a run within ``start_timeout`` or the run is
``unreachable``; once started, the agent enforces the run's own timeout, and the runner waits
``timeout + GRACE + MARGIN`` before it gives up on an answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Any, cast

from kernel.agent_client import AgentError, AgentRefused, AgentUnreachable, AsyncAgentClient
from kernel.server.core.agents import AgentPool
from kernel.server.core.db import utcnow
from kernel.server.core.text import fit_utf8, iso
from kernel.server.jobs.states import outcome
from kernel.server.models.jobs import Job, Run
from kernel.server.models.servers import Server

log = logging.getLogger(__name__)
GRACE = 5.0  # the agent's SIGTERM → SIGKILL grace
MARGIN = 15.0  # network and scheduling slack on top of a run's own timeout
REATTACH_MIN = 30.0  # after a restart, give agents at least this long to answer


@dataclass
class RunTask:
    """What the runner needs to execute a claimed run, detached from any database session."""

    run_id: str
    job_id: int
    server_id: int
    server_name: str
    url: str
    key: str
    fingerprint: str | None
    cmd: str
    stdin: str | None
    env: dict[str, str]
    cwd: str | None
    timeout: float
    sent_at: dt.datetime
    started_at: dt.datetime | None = None
    cancel_requested: bool = False
    out: dict[str, list[str]] = field(default_factory=lambda: {"stdout": [], "stderr": []})
    size: dict[str, int] = field(default_factory=lambda: {"stdout": 0, "stderr": 0})
    truncated: bool = False
    full: set[str] = field(default_factory=set)  # streams that reached the cap

    @classmethod
    def of(cls, run: Run, job: Job, srv: Server) -> RunTask:
        return cls(
            run_id=run.id,
            job_id=job.id,
            server_id=srv.id,
            server_name=run.server_name,
            url=srv.agent_url or "",
            key=srv.agent_key,
            fingerprint=srv.tls_fingerprint,
            cmd=job.cmd,
            stdin=job.stdin,
            env=dict(job.env or {}),
            cwd=job.cwd,
            timeout=job.timeout,
            sent_at=run.sent_at or utcnow(),
            started_at=run.started_at,
        )

    def add(self, stream: str, data: str, cap: int) -> str:
        """Keep output up to ``cap`` bytes per stream; returns the part kept. Once a stream is
        cut, later chunks are dropped too (no gaps in what is kept)."""
        if stream in self.full:
            return ""
        data, size, cut = fit_utf8(data, cap - self.size[stream])
        if cut:
            self.truncated = True
            self.full.add(stream)
        if data:
            self.out[stream].append(data)
            self.size[stream] += size
        return data

    def text(self, stream: str) -> str:
        return "".join(self.out[stream])


@dataclass
class Final:
    """How a run ended, to be written to its row."""

    state: str
    exit_code: int | None = None
    signal: int | None = None
    error: str | None = None
    duration: float | None = None
    stdout: str | None = None  # None: use what the task collected while streaming
    stderr: str | None = None
    truncated: bool = False

    def columns(self, task: RunTask, now: dt.datetime) -> dict[str, Any]:
        """Parameters of the runner's UPDATE of the run's row (started_at None: keep it)."""
        return {
            "run_id": task.run_id,
            "state": self.state,
            "exit_code": self.exit_code,
            "signal": self.signal,
            "error": self.error,
            "stdout": task.text("stdout") if self.stdout is None else self.stdout,
            "stderr": task.text("stderr") if self.stderr is None else self.stderr,
            "truncated": self.truncated or task.truncated,
            "finished_at": now,
            "duration": self.duration,
            "started_at": task.started_at,
        }


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def final_from(result: dict[str, Any], cap: int | None = None) -> Final:
    """A Final from an agent's exit event or exec result (as a dict)."""
    state = outcome(result)
    error = None
    if state == "lost":
        error = "the agent lost track of this run: " + str(result.get("reason") or "unknown")
    elif state == "timed_out":
        error = "the run hit its timeout and was killed by the agent"
    f = Final(
        state=state,
        exit_code=_int(result.get("exit_code")),
        signal=_int(result.get("signal")),
        error=error,
        duration=_float(result.get("duration")),
        truncated=bool(result.get("truncated")),
    )
    if cap is not None:
        for stream in ("stdout", "stderr"):
            text = result.get(stream)
            if isinstance(text, str):
                text, _size, cut = fit_utf8(text, cap)
                f.truncated = f.truncated or cut
                setattr(f, stream, text)
    return f


class AgentRun:
    def __init__(
        self,
        *,
        output_cap: int,
        start_timeout: float,
        connect_timeout: float,
        publish: Callable[..., None],
    ) -> None:
        self.cap = output_cap
        self.start_timeout = start_timeout
        self.connect_timeout = connect_timeout
        self.publish = publish
        self.agents = AgentPool(connect_timeout)

    def client(self, task: RunTask) -> AsyncAgentClient:
        return self.agents.get(task.url, task.key, task.fingerprint)

    async def close(self) -> None:
        await self.agents.close()

    def _started(self, task: RunTask) -> None:
        task.started_at = task.started_at or utcnow()
        self.publish(
            task.job_id,
            "run",
            run={
                "id": task.run_id,
                "job_id": task.job_id,
                "server": task.server_name,
                "state": "running",
                "started_at": iso(task.started_at),
            },
        )

    def _output(self, task: RunTask, stream: str, data: str) -> None:
        kept = task.add(stream, data, self.cap)
        if kept:
            self.publish(
                task.job_id,
                "output",
                run=task.run_id,
                server=task.server_name,
                stream=stream,
                data=kept,
            )

    async def execute(self, task: RunTask) -> Final:
        """Send the run (streaming its output live) and wait for its end."""
        loop = asyncio.get_running_loop()
        client = self.client(task)
        deadline = loop.time() + self.start_timeout + task.timeout + GRACE + MARGIN
        started = False
        final: Final | None = None
        try:
            async with asyncio.timeout(self.start_timeout) as budget:
                # stream() is an async generator: close it even when the timeout cuts it off.
                events = cast(
                    AsyncGenerator[dict[str, Any], None],
                    client.stream(
                        task.cmd,
                        stdin=task.stdin,
                        env=task.env or None,
                        cwd=task.cwd,
                        timeout=task.timeout,
                        id=task.run_id,
                    ),
                )
                async with contextlib.aclosing(events) as stream:
                    async for ev in stream:
                        kind = ev.get("event")
                        if kind == "started" and not started:
                            started = True
                            budget.reschedule(deadline)
                            self._started(task)
                            if task.cancel_requested:
                                # Cancelled while the request was on its way (the agent
                                # did not know the run yet): tell it now.
                                await self.cancel(task)
                        elif kind in ("stdout", "stderr"):
                            self._output(task, kind, str(ev.get("data", "")))
                        elif kind == "exit":
                            final = final_from(ev)
                    # Read on to the end of the response (the exit event is last): a response
                    # left half-read cannot go back to the pool, and the next run to this
                    # agent would pay for a new connection.
                    if final is not None:
                        return final
        except TimeoutError:
            if final is not None:
                return final
            if not started:
                return Final(
                    "unreachable",
                    error=f"the agent did not start the run within {self.start_timeout:g} s",
                )
        except AgentUnreachable as e:
            if final is not None:
                return final
            if not started:
                return Final("unreachable", error=f"agent unreachable: {e}")
            log.info("run %s: stream to %s broke (%s); polling", task.run_id, task.url, e)
        except AgentRefused as e:
            return Final("failed", error=f"the agent refused the run: {e}")
        # The stream ended early (agent restarted, connection dropped): the run may go on.
        return await self._poll(task, deadline, after_restart=False, started=started)

    async def reattach(self, task: RunTask) -> Final:
        """After a server restart: find out what became of a run that may have been sent."""
        loop = asyncio.get_running_loop()
        elapsed = (utcnow() - task.sent_at).total_seconds()
        left = task.timeout + GRACE + MARGIN - elapsed
        return await self._poll(
            task, loop.time() + max(left, REATTACH_MIN), after_restart=True, started=False
        )

    async def _poll(
        self, task: RunTask, deadline: float, *, after_restart: bool, started: bool
    ) -> Final:
        loop = asyncio.get_running_loop()
        client = self.client(task)
        answered = False
        pause = 0.2
        last_error = ""
        while loop.time() < deadline:
            wait = max(0.0, min(5.0, deadline - loop.time() - 1))
            try:
                result = await client.status(task.run_id, wait=wait if answered else None)
            except AgentUnreachable as e:
                last_error = str(e)
            except AgentRefused as e:
                if e.code == 404:
                    return Final(
                        "lost",
                        error="the agent has no record of this run (never received, or forgotten)",
                    )
                last_error = str(e)
            else:
                answered = True
                data = dict(result.__dict__)
                if data.get("state") == "running" and task.started_at is None:
                    self._started(task)
                    if task.cancel_requested:
                        await self.cancel(task)
                if data.get("state") in ("finished", "lost"):
                    return final_from(data, self.cap)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 2.0)
        if after_restart and not answered:
            return Final("lost", error=f"agent unreachable after a server restart: {last_error}")
        if not answered and not started:
            return Final("unreachable", error=f"lost contact with the agent: {last_error}")
        if not answered:
            # The agent accepted and started the run, then went silent (frozen, cut off):
            # the run used up its time, and what happened on the host is unknown.
            return Final(
                "timed_out",
                error="the agent stopped answering after the run started; no result by the "
                f"run's deadline ({last_error or 'no answer'})",
            )
        return Final("timed_out", error="no result from the agent by the run's deadline")

    async def cancel(self, task: RunTask) -> bool:
        """Ask the agent to cancel; False if it could not be told."""
        try:
            await self.client(task).cancel(task.run_id)
        except AgentError as e:
            log.info("cancel of run %s on %s failed: %s", task.run_id, task.url, e)
            return False
        return True

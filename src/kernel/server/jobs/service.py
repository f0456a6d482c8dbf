"""Jobs: one RemoteCommand on many servers, one run per server. Creating, reading, cancelling
and rerunning them; the runner (runner.py) executes them."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Table, insert, select
from sqlalchemy.orm import Session

from kernel.exceptions import InvalidInput
from kernel.server.core.db import utcnow
from kernel.server.core.events import EventBus
from kernel.server.core.shell import RemoteCommand
from kernel.server.jobs import states
from kernel.server.jobs.shapes import run_json
from kernel.server.models.jobs import Job, Run
from kernel.server.models.servers import Server


def new_run_id() -> str:
    """Also the agent's exec id, so it must be unique and valid for the agent ([A-Za-z0-9])."""
    return uuid.uuid4().hex


def live_servers(s: Session) -> list[Server]:
    """Servers not removed, by name, as transient copies with what a job needs (read with one
    prepared query: no ORM entities, and not their facts)."""
    return [Server(**row) for row in s.execute(_LIVE_SERVERS).mappings()]


_LIVE_SERVERS = (
    select(
        Server.id,
        Server.name,
        Server.agent_url,
        Server.agent_key,
        Server.tls_fingerprint,
        Server.tags,
        Server.state,
    )
    .where(Server.removed_at.is_(None))
    .order_by(Server.name)
)


def resolve_targets(s: Session, spec: dict[str, Any]) -> tuple[list[Server], list[str]]:
    """Servers chosen by names, tags and/or ``all``; (targets, names skipped as not joined)."""
    names = spec.get("servers") or []
    tags = spec.get("tags") or []
    pick_all = spec.get("all", False)
    if not (names or tags or pick_all):
        raise InvalidInput("choose targets: 'servers' (names), 'tags', or 'all': true")
    servers = live_servers(s)
    by_name = {srv.name: srv for srv in servers}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise InvalidInput(f"no such server(s): {', '.join(sorted(unknown))}")
    chosen = {
        srv.id: srv
        for srv in servers
        if pick_all or srv.name in names or set(tags) & set(srv.tags or [])
    }
    targets = [srv for srv in chosen.values() if srv.agent_url]
    skipped = sorted(srv.name for srv in chosen.values() if not srv.agent_url)
    not_joined = [n for n in names if n in skipped]
    if not_joined:
        raise InvalidInput(f"server(s) not joined yet (no agent URL): {', '.join(not_joined)}")
    if not targets:
        raise InvalidInput("no joined server matches the targets")
    return sorted(targets, key=lambda srv: srv.name), skipped


def create_job(
    s: Session,
    command: RemoteCommand,
    servers: Sequence[Server],
    *,
    created_by: str,
    kind: str = "command",
    targets: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
    parent_id: int | None = None,
    owner: str | None = None,
) -> Job:
    """Queue a job and its runs (the caller commits, then launches them through its
    `runner.Admission`). ``owner``: the replica whose runner has reserved slots for every run
    (`Admission.owner`), so they are written as sent by it (``running``, ``sent_at``,
    ``owner``) — the claim's journal entry — not ``queued``.

    Written with two prepared INSERTs in the caller's transaction (the job, then its runs in
    one executemany): every job starts here, and the ORM's unit of work cost more than the
    inserts. The Job returned is a transient copy (not in the session) with its ``runs`` in
    server-name order — what the answer and the runner need, with no read after the commit."""
    now = utcnow()
    sent = now if owner else None
    state = "running" if owner else "queued"
    job_values: dict[str, Any] = {
        "kind": kind,
        "title": command.title or command.cmd[:255],
        "cmd": command.cmd,
        "stdin": command.stdin,
        "env": dict(command.env),
        "cwd": command.cwd,
        "timeout": command.timeout,
        "targets": targets or {"servers": [srv.name for srv in servers]},
        "meta": meta or {},
        "created_by": created_by,
        "created_at": now,
        "parent_id": parent_id,
        "state": state,
        "started_at": sent,
        "finished_at": None,
        "cancel_requested": False,
    }
    conn = s.connection()
    (job_id,) = conn.execute(_INSERT_JOB, job_values).inserted_primary_key or (None,)
    run_values = [
        {
            "id": new_run_id(),
            "job_id": job_id,
            "server_id": srv.id,
            "server_name": srv.name,
            "state": state,
            "exit_code": None,
            "signal": None,
            "stdout": "",
            "stderr": "",
            "truncated": False,
            "error": None,
            "sent_at": sent,
            "started_at": None,
            "finished_at": None,
            "duration": None,
            "owner": owner,
        }
        for srv in sorted(servers, key=lambda srv: srv.name)
    ]
    conn.execute(_INSERT_RUN, run_values)
    return Job(id=job_id, **job_values, runs=[Run(**values) for values in run_values])


_INSERT_JOB = insert(cast(Table, Job.__table__))
_INSERT_RUN = insert(cast(Table, Run.__table__))


def command_of(job: Job) -> RemoteCommand:
    return RemoteCommand(
        cmd=job.cmd,
        stdin=job.stdin,
        env=dict(job.env or {}),
        cwd=job.cwd,
        timeout=job.timeout,
        title=job.title,
    )


def refresh_job_state(s: Session, job: Job, run_states: Sequence[str] | None = None) -> bool:
    """Recompute a job's state from its runs' states (read here if not given; a caller that
    needs them too passes what it read after its changes); True if it just ended."""
    if run_states is None:
        run_states = s.scalars(select(Run.state).where(Run.job_id == job.id)).all()
    new = states.job_state(run_states, job.cancel_requested)
    if new == job.state:
        return False
    ended = new in ("finished", "cancelled") and job.state not in ("finished", "cancelled")
    job.state = new
    if new != "queued" and job.started_at is None:
        job.started_at = utcnow()
    if ended:
        job.finished_at = utcnow()
    return ended


def cancel_job(s: Session, job: Job, bus: EventBus) -> list[str]:
    """Mark a job cancelled: queued runs end now; returns the ids of running runs, which the
    runner must cancel on their agents. The caller commits."""
    job.cancel_requested = True
    now = utcnow()
    running = []
    for run in s.scalars(select(Run).where(Run.job_id == job.id)):
        if run.state == "queued":
            run.state, run.finished_at, run.error = "cancelled", now, "cancelled before it started"
            bus.publish(job.id, "run", run=run_json(run))
        elif run.state == "running":
            running.append(run.id)
    if refresh_job_state(s, job):
        bus.publish(job.id, "end", state=job.state, summary=_summary(s, job))
    return running


def _summary(s: Session, job: Job) -> dict[str, int]:
    return states.summary(s.scalars(select(Run.state).where(Run.job_id == job.id)).all())


def rerun_servers(s: Session, job: Job) -> list[Server]:
    """The live servers whose run of ``job`` did not succeed."""
    runs = s.scalars(select(Run).where(Run.job_id == job.id)).all()
    ids = {r.server_id for r in runs if states.needs_rerun(r.state)}
    return [srv for srv in live_servers(s) if srv.id in ids and srv.agent_url]

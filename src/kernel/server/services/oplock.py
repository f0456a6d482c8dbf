"""One service operation per (server, service) at a time.

There is no lock row to leak: "busy" is derived from the job tables. A service operation is a
job of kind ``service`` with ``meta = {"service": name, "op": op}``; the pair is busy while one
of that job's runs on the server is ``queued`` or ``running``. A run always ends (the runner
finishes, re-attaches or marks it ``lost`` after a restart), so a crash cannot leave a pair
stuck. Check and create happen under one process-wide lock and in one transaction that
first locks the servers' rows (PostgreSQL: ``SELECT … FOR UPDATE``; SQLite: the write lock
taken by ``BEGIN IMMEDIATE``), so two processes or replicas serialize on the same servers.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from kernel.exceptions import Conflict
from kernel.server.models.jobs import Job, Run
from kernel.server.models.servers import Server

KIND = "service"
UNFINISHED = ("queued", "running")

# Held from the busy check until the new job is committed, so two requests in this process
# cannot both see a pair free.
guard = threading.Lock()


def busy(s: Session, server_ids: Iterable[int], service: str) -> dict[int, int]:
    """{server id: job id} of unfinished operations on `service` for these servers."""
    ids = set(server_ids)
    if not ids:
        return {}
    rows = s.execute(
        select(Run.server_id, Job.id, Job.meta)
        .join(Job, Run.job_id == Job.id)
        .where(Job.kind == KIND, Run.state.in_(UNFINISHED), Run.server_id.in_(ids))
    ).all()
    return {
        server_id: job_id
        for server_id, job_id, meta in rows
        if isinstance(meta, dict) and meta.get("service") == service
    }


def ensure_free(s: Session, servers: dict[int, str], service: str) -> None:
    """409 naming each server already running an operation on `service`."""
    s.execute(select(Server.id).where(Server.id.in_(list(servers))).with_for_update()).all()
    taken = busy(s, servers, service)
    if taken:
        detail = ", ".join(f"{servers[sid]} (job {jid})" for sid, jid in sorted(taken.items()))
        raise Conflict(
            f"another operation on service {service!r} is still running on: {detail}",
            busy={servers[sid]: jid for sid, jid in taken.items()},
        )

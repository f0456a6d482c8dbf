"""Init scripts on joining servers (ARCHITECTURE.md §4): ``init/NN-name.sh`` of the data dir run
once per server, in order, stopping at the first failure; retry continues from there; a script
added later runs on demand. Each script runs as its own job (kind ``init``) so it has live
output and history like any other; the next one is queued when the previous one succeeds
(:func:`after_run`, called by the runner in the same transaction that stores the result).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from kernel.exceptions import Conflict, InvalidInput
from kernel.server.core.db import utcnow
from kernel.server.core.settings import public_url
from kernel.server.inventory.initscripts import InitScript, init_command, scan_init
from kernel.server.jobs.service import create_job
from kernel.server.models.jobs import Job, Run
from kernel.server.models.servers import InitRecord, Server


def scripts(config: Any) -> list[InitScript]:
    return list(scan_init(Path(config["DATA_DIR"]) / "init").scripts)


def _latest(s: Session, server: Server) -> dict[str, InitRecord]:
    rows = s.scalars(
        select(InitRecord).where(InitRecord.server_id == server.id).order_by(InitRecord.id)
    )
    return {r.script: r for r in rows}  # later rows win


def status(s: Session, server: Server, config: Any) -> list[dict[str, Any]]:
    """Every current script with its latest record (``not_run`` if none), in run order."""
    latest = _latest(s, server)
    out = []
    for sc in scripts(config):
        rec = latest.get(sc.name)
        entry: dict[str, Any] = {"script": sc.name, "sha256": sc.sha256, "state": "not_run"}
        if rec is not None:
            entry.update(rec.to_json())
            entry["sha256"] = sc.sha256
            entry["ran_sha256"] = rec.sha256
            entry["changed_since_run"] = rec.sha256 != sc.sha256
        out.append(entry)
    return out


def pending(s: Session, server: Server, config: Any) -> list[InitScript]:
    latest = _latest(s, server)
    return [
        sc for sc in scripts(config) if latest.get(sc.name) is None or latest[sc.name].state != "ok"
    ]


def busy(s: Session, server: Server) -> bool:
    return (
        s.scalars(
            select(InitRecord).where(
                InitRecord.server_id == server.id, InitRecord.state.in_(("queued", "running"))
            )
        ).first()
        is not None
    )


def start(
    s: Session, server: Server, config: Any, *, created_by: str, only: str | None = None
) -> Job | None:
    """Queue the next init script (or the one named ``only``); None if nothing is left."""
    if busy(s, server):
        raise Conflict(f"an init script is already queued or running on {server.name}")
    if only is not None:
        chosen = [sc for sc in scripts(config) if sc.name == only]
        if not chosen:
            raise InvalidInput(f"no init script named {only!r}")
    else:
        chosen = pending(s, server, config)[:1]
    if not chosen:
        return None
    sc = chosen[0]
    command = init_command(sc, kernel_url=public_url(config))
    job = create_job(
        s,
        command,
        [server],
        created_by=created_by,
        kind="init",
        meta={"script": sc.name, "sha256": sc.sha256, "chain": only is None},
    )
    s.add(
        InitRecord(
            server_id=server.id, script=sc.name, sha256=sc.sha256, job_id=job.id, state="queued"
        )
    )
    s.flush()
    return job


def after_run(s: Session, config: Any, job: Job, run: Run) -> bool:
    """Record an init run's end; queue the next script if the chain goes on. True if queued."""
    rec = s.scalars(select(InitRecord).where(InitRecord.job_id == job.id)).first()
    if rec is None:
        return False
    rec.state, rec.exit_code, rec.finished_at = run.state, run.exit_code, utcnow()
    server = s.get(Server, run.server_id)
    if server is None or server.removed_at is not None:
        return False
    if run.state != "ok":
        server.state = "init_failed"
        server.last_error = f"init script {rec.script} ended {run.state}" + (
            f" (exit {run.exit_code})" if run.exit_code is not None else ""
        )
        return False
    if server.state == "init_failed" and not pending(s, server, config):
        server.state, server.last_error = "online", None
    if (job.meta or {}).get("chain"):
        s.flush()
        nxt = start(s, server, config, created_by=job.created_by)
        if nxt is None and server.state == "init_failed":
            server.state, server.last_error = "online", None
        return nxt is not None
    return False

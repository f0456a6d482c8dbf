"""REST endpoints for jobs (/api/v1/jobs) and their live event stream (SSE)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, stream_with_context
from sqlalchemy import select

from kernel.exceptions import Conflict, InvalidInput, NotFound, RateLimited
from kernel.server.core.db import Database
from kernel.server.core.events import Releasing
from kernel.server.core.shell import RemoteCommand
from kernel.server.jobs.service import (
    cancel_job,
    command_of,
    create_job,
    job_json,
    rerun_servers,
    resolve_targets,
    run_json,
)
from kernel.server.models.jobs import Job, Run
from kernel.server.web import audit, context
from kernel.server.web.access import actor, role
from kernel.server.web.params import (
    get_bool,
    get_name,
    get_number,
    get_str,
    get_tags,
    int_arg,
    json_body,
    reject_unknown,
    str_arg,
)

bp = Blueprint("jobs", __name__, url_prefix="/api/v1/jobs")
MAX_CMD = 64 * 1024
MAX_STDIN = 8 * 1024 * 1024
KEEPALIVE = 15.0
SNAPSHOT_OUTPUT = 65536  # characters of each stream a snapshot carries from the database


def _get_job(job_id: int) -> Job:
    job = context.session().get(Job, job_id)
    if job is None:
        raise NotFound(f"no job {job_id}")
    return job


def _parse_targets(data: object) -> dict[str, object]:
    if not isinstance(data, dict):
        raise InvalidInput("'targets' must be an object: {servers: [...], tags: [...], all: bool}")
    reject_unknown(data, {"servers", "tags", "all"})
    names = data.get("servers") or []
    if not isinstance(names, list):
        raise InvalidInput("'targets.servers' must be a list of server names")
    for n in names:
        get_name({"server": n}, "server")
    return {
        "servers": sorted(set(names)),
        "tags": get_tags(data) or [],
        "all": get_bool(data, "all"),
    }


def _parse_env(data: object) -> dict[str, str]:
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise InvalidInput("'env' must be an object of string values")
    for k in data:
        if (
            not k
            or not (k[0].isalpha() or k[0] == "_")
            or not all(c.isalnum() or c == "_" for c in k)
            or not k.isascii()
        ):
            raise InvalidInput(f"environment variable name {k[:70]!r} is not valid")
    return dict(data)


@bp.get("")
@role("viewer")
def list_jobs() -> Response:
    limit = int_arg("limit", 50, 1, 500)
    q = select(Job).order_by(Job.id.desc()).limit(limit)
    if before := int_arg("before", None, 1, 2**62):
        q = q.where(Job.id < before)
    if state := str_arg("state"):
        q = q.where(Job.state == state)
    jobs = context.session().scalars(q).all()
    return jsonify({"jobs": [job_json(j) for j in jobs]})


@bp.post("")
@role("operator")
def create() -> tuple[Response, int]:
    """Run a command (or a script on stdin with ``cmd: "bash -s"``) on the chosen servers."""
    data = json_body()
    reject_unknown(data, {"cmd", "stdin", "env", "cwd", "timeout", "title", "targets"})
    cmd = get_str(data, "cmd", required=True, max_len=MAX_CMD) or ""
    if not cmd.strip():
        raise InvalidInput("'cmd' must not be empty")
    command = RemoteCommand(
        cmd=cmd,
        stdin=get_str(data, "stdin", max_len=MAX_STDIN),
        env=_parse_env(data.get("env")),
        cwd=get_str(data, "cwd", max_len=1024),
        timeout=get_number(data, "timeout", 600.0, 0.1, 7 * 86400),
        title=get_str(data, "title", max_len=255) or "",
    )
    spec = _parse_targets(data.get("targets"))
    s = context.session()
    servers, skipped = resolve_targets(s, spec)
    with context.runner().admission(len(servers)) as admission:
        job = create_job(
            s, command, servers, created_by=actor(), targets=spec, running=admission.direct
        )
        audit.note(
            "job.create",
            target=f"job {job.id}",
            hosts=[srv.name for srv in servers],
            cmd=cmd[:1000],
            has_stdin=command.stdin is not None,
        )
        audit.write_with(s)
        s.commit()
    admission.launch(job, servers)
    return jsonify({**job_json(job, job.runs), "skipped": skipped}), 201


@bp.get("/<int:job_id>")
@role("viewer")
def get_job(job_id: int) -> Response:
    job = _get_job(job_id)
    output = request.args.get("output") in ("1", "true")
    return jsonify(job_json(job, job.runs, output=output))


@bp.get("/<int:job_id>/runs/<run_id>")
@role("viewer")
def get_run(job_id: int, run_id: str) -> Response:
    run = context.session().get(Run, run_id[:64])
    if run is None or run.job_id != job_id:
        raise NotFound(f"no run {run_id[:64]!r} in job {job_id}")
    return jsonify(run_json(run, output=True))


@bp.post("/<int:job_id>/cancel")
@role("operator")
def cancel(job_id: int) -> Response:
    s = context.session()
    job = _get_job(job_id)
    if job.state in ("finished", "cancelled"):
        raise Conflict(f"job {job_id} has already ended ({job.state})")
    running = cancel_job(s, job, context.bus())
    audit.note("job.cancel", target=f"job {job_id}", hosts=[r.server_name for r in job.runs])
    s.commit()
    context.runner().cancel_runs(running)
    return jsonify(job_json(job, job.runs))


@bp.post("/<int:job_id>/rerun")
@role("operator")
def rerun(job_id: int) -> tuple[Response, int]:
    """A new job with the same command on the servers whose run did not succeed."""
    s = context.session()
    job = _get_job(job_id)
    if job.kind != "command":
        # Service operations and init scripts carry expiring URLs and their own rules (the
        # one-operation-per-service lock, run-once init records): they are redone through
        # their own endpoints, never replayed from here.
        where = {
            "service": "POST /api/v1/services/<name>/<op>",
            "init": "POST /api/v1/servers/<id>/init",
        }
        raise Conflict(
            f"job {job_id} is a {job.kind} job; redo it with {where.get(job.kind, 'its own API')}"
        )
    if job.state not in ("finished", "cancelled"):
        raise Conflict(f"job {job_id} is still {job.state}; rerun it when it has ended")
    servers = rerun_servers(s, job)
    if not servers:
        raise Conflict(f"job {job_id} has no failed run on a server that still exists")
    with context.runner().admission(len(servers)) as admission:
        new = create_job(
            s,
            command_of(job),
            servers,
            created_by=actor(),
            kind=job.kind,
            targets={"servers": [srv.name for srv in servers], "rerun_of": job.id},
            meta=job.meta,
            parent_id=job.id,
            running=admission.direct,
        )
        audit.note(
            "job.rerun",
            target=f"job {new.id}",
            hosts=[srv.name for srv in servers],
            rerun_of=job.id,
            cmd=job.cmd[:1000],
        )
        s.commit()
    admission.launch(new, servers)
    return jsonify(job_json(new, new.runs)), 201


@bp.get("/<int:job_id>/events")
@role("viewer")
def events(job_id: int) -> Response:
    """Server-sent events: a snapshot, then run/output/job events, then ``end``."""
    _get_job(job_id)
    context.close_session()  # a long stream must not hold a database transaction
    bus = context.bus()
    # Each open stream holds a server thread: cap them so readers cannot starve the API.
    limit = int(current_app.config.get("SSE_MAX_STREAMS") or current_app.config["THREADS"] // 2)
    slot = bus.open_stream(limit)
    if slot is None:
        raise RateLimited(f"too many live event streams open ({limit}); try again later")
    resume = bus.parse_id(request.headers.get("Last-Event-ID") or request.args.get("last_event_id"))
    database = context.db()
    keepalive = float(current_app.config.get("SSE_KEEPALIVE", KEEPALIVE))

    def snapshot() -> tuple[int, dict[str, Any]]:
        # The bus's position is taken first: later events are replayed after the snapshot.
        seq, live = bus.output_so_far(job_id)
        with database.session() as s:
            job = s.get(Job, job_id)
            assert job is not None
            data = job_json(job, job.runs)
            for run_data, run in zip(data["runs"], job.runs, strict=True):
                if live is not None:
                    run_data.update(live.get(run.id, {"stdout": "", "stderr": ""}))
                else:  # events were dropped: what the database has, the tail if it is long
                    run_data["stdout"] = run.stdout[-SNAPSHOT_OUTPUT:]
                    run_data["stderr"] = run.stderr[-SNAPSHOT_OUTPUT:]
                    run_data["output_partial"] = run.state == "running" or (
                        len(run.stdout) > SNAPSHOT_OUTPUT or len(run.stderr) > SNAPSHOT_OUTPUT
                    )
            return seq, data

    def gen() -> Iterator[str]:
        try:
            yield from stream()
        finally:
            slot.release()

    def stream() -> Iterator[str]:
        seq = resume
        yield "retry: 2000\n\n"
        while True:
            if seq is None:
                seq, job = snapshot()
                yield _sse(bus.epoch, seq, "snapshot", {"job_id": job_id, "job": job})
                if job["state"] in ("finished", "cancelled"):
                    end = {"job_id": job_id, "state": job["state"], "summary": job["summary"]}
                    yield _sse(bus.epoch, seq, "end", end)
                    return
            batch = bus.after(job_id, seq, keepalive)
            if batch is None:
                seq = None
                continue
            if not batch:
                yield ": keepalive\n\n"
                if _ended_in_db(database, job_id):  # ended by another process
                    seq = None
                continue
            for ev in batch:
                yield ev.sse(bus.epoch)
                seq = ev.seq
                if ev.type == "end":
                    return

    resp = Response(Releasing(stream_with_context(gen()), slot), mimetype="text/event-stream")
    resp.headers["Cache-Control"] = "no-cache"
    resp.headers["X-Accel-Buffering"] = "no"
    return resp


def _ended_in_db(database: Database, job_id: int) -> bool:
    with database.session() as s:
        job = s.get(Job, job_id)
        return job is None or job.state in ("finished", "cancelled")


def _sse(epoch: str, seq: int, type_: str, data: dict[str, object]) -> str:
    body = json.dumps({"type": type_, **data}, separators=(",", ":"))
    return f"id: {epoch}-{seq}\nevent: {type_}\ndata: {body}\n\n"

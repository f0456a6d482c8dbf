"""The routes of jobs (/api/v1/jobs), and a job's live events over server-sent events
(``GET /api/v1/jobs/<id>/events``): a snapshot, then run/output/job events, then ``end``; a
reader resuming with ``Last-Event-ID`` picks up where it left off (docs/api.md)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, stream_with_context
from sqlalchemy import select

from kernel.exceptions import Conflict, NotFound, RateLimited
from kernel.server.core.db import Database
from kernel.server.core.events import Releasing
from kernel.server.core.shell import RemoteCommand
from kernel.server.core.sse import frame
from kernel.server.jobs.schemas import (
    JobAnswer,
    JobCreate,
    JobList,
    JobListAnswer,
    JobShow,
    RunAnswer,
)
from kernel.server.jobs.service import (
    cancel_job,
    command_of,
    create_job,
    rerun_servers,
    resolve_targets,
)
from kernel.server.jobs.shapes import job_json, run_json
from kernel.server.models.jobs import Job, Run
from kernel.server.web import audit, context
from kernel.server.web.access import actor, role
from kernel.server.web.endpoint import endpoint

bp = Blueprint("jobs", __name__, url_prefix="/api/v1/jobs")


def _get_job(job_id: int) -> Job:
    job = context.session().get(Job, job_id)
    if job is None:
        raise NotFound(f"no job {job_id}")
    return job


@bp.get("")
@role("viewer")
@endpoint("jobs, newest first", query=JobList, answers={200: JobListAnswer})
def list_jobs(query: JobList) -> Response:
    """``?before=<id>`` pages back, ``?state=`` filters."""
    q = select(Job).order_by(Job.id.desc()).limit(query.limit)
    if query.before:
        q = q.where(Job.id < query.before)
    if query.state:
        q = q.where(Job.state == query.state)
    jobs = context.session().scalars(q).all()
    return jsonify({"jobs": [job_json(j) for j in jobs]})


@bp.post("")
@role("operator")
@endpoint("run a command on servers chosen by name, tag or all", body=JobCreate,
          answers={201: JobAnswer})  # fmt: skip
def create(body: JobCreate) -> tuple[Response, int]:
    """Run a command (or a script on stdin with ``cmd: "bash -s"``) on the chosen servers."""
    job, skipped = start_command(body)
    return jsonify({**job_json(job, job.runs), "skipped": skipped}), 201


def start_command(body: JobCreate) -> tuple[Job, list[str]]:
    """Create and launch a command job (also the console's "run"): the job (a transient copy
    with its runs) and the names of chosen servers skipped as not joined."""
    command = RemoteCommand(
        cmd=body.cmd,
        stdin=body.stdin,
        env=dict(body.env),
        cwd=body.cwd,
        timeout=body.timeout,
        title=body.title,
    )
    spec = body.targets.spec()
    s = context.session()
    servers, skipped = resolve_targets(s, spec)
    with context.runner().admission(len(servers)) as admission:
        job = create_job(
            s, command, servers, created_by=actor(), targets=spec, owner=admission.owner
        )
        audit.note(
            "job.create",
            target=f"job {job.id}",
            hosts=[srv.name for srv in servers],
            cmd=body.cmd[:1000],
            has_stdin=command.stdin is not None,
        )
        audit.write_with(s)
        s.commit()
    admission.launch(job, servers)
    return job, skipped


@bp.get("/<int:job_id>")
@role("viewer")
@endpoint("a job with its runs (``?output=1``: with their output)", query=JobShow,
          answers={200: JobAnswer})  # fmt: skip
def get_job(job_id: int, query: JobShow) -> Response:
    job = _get_job(job_id)
    return jsonify(job_json(job, job.runs, output=query.output))


@bp.get("/<int:job_id>/runs/<run_id>")
@role("viewer")
@endpoint("one run with its output", answers={200: RunAnswer})
def get_run(job_id: int, run_id: str) -> Response:
    run = context.session().get(Run, run_id[:64])
    if run is None or run.job_id != job_id:
        raise NotFound(f"no run {run_id[:64]!r} in job {job_id}")
    return jsonify(run_json(run, output=True))


@bp.get("/<int:job_id>/runs/<run_id>/output")
@role("viewer")
@endpoint("one run's whole stored output as a text file (stdout, then stderr)",
          produces="text/plain")  # fmt: skip
def run_output(job_id: int, run_id: str) -> Response:
    """A download: the run's stdout, then (marked) its stderr, as stored (capped by
    OUTPUT_CAP; a ``truncated`` run says so at the end)."""
    run = context.session().get(Run, run_id[:64])
    if run is None or run.job_id != job_id:
        raise NotFound(f"no run {run_id[:64]!r} in job {job_id}")
    text = run.stdout
    if run.stderr:
        text += ("" if not text or text.endswith("\n") else "\n") + "--- stderr ---\n" + run.stderr
    if run.truncated:
        text += "\n--- output truncated (OUTPUT_CAP) ---\n"
    resp = Response(text, mimetype="text/plain")
    name = f"job{job_id}-{run.server_name}.txt"
    resp.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return resp


@bp.post("/<int:job_id>/cancel")
@role("operator")
@endpoint("cancel (its runs on the agents too)", answers={200: JobAnswer})
def cancel(job_id: int) -> Response:
    job = cancel_by_id(job_id)
    return jsonify(job_json(job, job.runs))


def cancel_by_id(job_id: int) -> Job:
    """Cancel a job (409 once it has ended); its running runs are cancelled on their agents."""
    s = context.session()
    job = _get_job(job_id)
    if job.state in ("finished", "cancelled"):
        raise Conflict(f"job {job_id} has already ended ({job.state})")
    running = cancel_job(s, job, context.bus())
    audit.note("job.cancel", target=f"job {job_id}", hosts=[r.server_name for r in job.runs])
    s.commit()
    context.runner().cancel_runs(running)
    return job


@bp.post("/<int:job_id>/rerun")
@role("operator")
@endpoint("a new job for the runs that did not succeed", answers={201: JobAnswer})
def rerun(job_id: int) -> tuple[Response, int]:
    """A new job with the same command on the servers whose run did not succeed."""
    new = rerun_failed(job_id)
    return jsonify(job_json(new, new.runs)), 201


def rerun_failed(job_id: int) -> Job:
    """The new job for a command job's runs that did not succeed (409 for other kinds)."""
    s = context.session()
    job = _get_job(job_id)
    if job.kind != "command":
        # Service operations and init scripts carry expiring URLs and their own rules (the
        # one-operation-per-service lock, run-once init records): they are redone through
        # their own endpoints, never replayed from here.
        where = {
            "service": "POST /api/v1/services/<name>/<op>",
            "init": "POST /api/v1/servers/<id>/init",
            "schedule": "POST /api/v1/schedules/<id>/run",
            "file": "POST /api/v1/files/<id>/push",
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
            owner=admission.owner,
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
    return new


# ------------------------------------------------------------------------------------------
events_bp = Blueprint("job_events", __name__, url_prefix="/api/v1/jobs")
KEEPALIVE = 15.0
SNAPSHOT_OUTPUT = 65536  # characters of each stream a snapshot carries from the database


@events_bp.get("/<int:job_id>/events")
@role("viewer")
@endpoint("live events (text/event-stream); see docs/api.md", produces="text/event-stream")
def events(job_id: int) -> Response:
    """Server-sent events: a snapshot, then run/output/job events, then ``end``."""
    if context.session().get(Job, job_id) is None:
        raise NotFound(f"no job {job_id}")
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
            if live is not None and job.created_at.timestamp() < bus.complete_since:
                live = None  # began before this replica heard every other's events
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
                yield frame(bus.epoch, seq, "snapshot", {"job_id": job_id, "job": job})
                if job["state"] in ("finished", "cancelled"):
                    end = {"job_id": job_id, "state": job["state"], "summary": job["summary"]}
                    yield frame(bus.epoch, seq, "end", end)
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


blueprints = (bp, events_bp)

"""A job's live events over server-sent events (GET /api/v1/jobs/<id>/events): a snapshot,
then run/output/job events, then ``end``; a reader resuming with ``Last-Event-ID`` picks up
where it left off (docs/api.md)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, current_app, request, stream_with_context

from kernel.exceptions import NotFound, RateLimited
from kernel.server.core.db import Database
from kernel.server.core.events import Releasing
from kernel.server.core.sse import frame
from kernel.server.jobs.shapes import job_json
from kernel.server.models.jobs import Job
from kernel.server.web import context
from kernel.server.web.access import role
from kernel.server.web.endpoint import endpoint

bp = Blueprint("job_events", __name__, url_prefix="/api/v1/jobs")
KEEPALIVE = 15.0
SNAPSHOT_OUTPUT = 65536  # characters of each stream a snapshot carries from the database


@bp.get("/<int:job_id>/events")
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

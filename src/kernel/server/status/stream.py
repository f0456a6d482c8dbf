"""Live status over server-sent events (GET /api/v1/status/events): a snapshot of every
host's brief (status/brief.py), then a ``host`` event whenever the poller stores a probe that
changed a host's state, unit states or figures. Resumable with ``Last-Event-ID`` within one
server process, like a job's stream (jobs/stream.py); docs/api.md has the event JSON."""

from __future__ import annotations

from collections.abc import Iterator

from flask import Blueprint, Response, current_app, request, stream_with_context

from kernel.exceptions import RateLimited
from kernel.server.core.db import Database
from kernel.server.core.events import Releasing
from kernel.server.core.sse import frame
from kernel.server.services.cache import CatalogueCache
from kernel.server.status.queries import fleet, fleet_briefs
from kernel.server.status.schemas import StatusEventsQuery
from kernel.server.web import context
from kernel.server.web.access import role
from kernel.server.web.endpoint import endpoint

bp = Blueprint("status_events", __name__, url_prefix="/api/v1/status")
KEEPALIVE = 15.0


@bp.get("/events")
@role("viewer")
@endpoint("live status changes (text/event-stream); see docs/api.md", query=StatusEventsQuery,
          produces="text/event-stream")  # fmt: skip
def events(query: StatusEventsQuery) -> Response:
    """Server-sent events: ``snapshot`` (every host), then ``host`` changes."""
    ids = query.server_ids()
    context.close_session()  # a long stream must not hold a database transaction
    feed = context.poller().feed
    bus = context.bus()  # its stream count bounds every kind of event stream together
    limit = int(current_app.config.get("SSE_MAX_STREAMS") or current_app.config["THREADS"] // 2)
    slot = bus.open_stream(limit)
    if slot is None:
        raise RateLimited(f"too many live event streams open ({limit}); try again later")
    last = request.headers.get("Last-Event-ID") or request.args.get("last_event_id")
    resume = feed.parse_id(last)
    database, catalogue = context.db(), context.catalogue()
    keepalive = float(current_app.config.get("SSE_KEEPALIVE", KEEPALIVE))
    wanted = None if ids is None else set(ids)

    def stream() -> Iterator[str]:
        seq = resume
        yield "retry: 2000\n\n"
        while True:
            if seq is None:
                seq = feed.last_seq  # taken first: later changes follow the snapshot
                hosts = _snapshot(database, catalogue, ids)
                yield frame(feed.epoch, seq, "snapshot", {"hosts": hosts})
            batch = feed.after(seq, keepalive)
            if batch is None:
                seq = None
                continue
            if not batch:
                yield ": keepalive\n\n"
                continue
            for change in batch:
                seq = change.seq
                if wanted is None or change.host["server_id"] in wanted:
                    data = {"host": change.host, "changed": list(change.changed)}
                    yield frame(feed.epoch, change.seq, "host", data)

    def gen() -> Iterator[str]:
        try:
            yield from stream()
        finally:
            slot.release()

    resp = Response(Releasing(stream_with_context(gen()), slot), mimetype="text/event-stream")
    resp.headers["Cache-Control"] = "no-cache"
    resp.headers["X-Accel-Buffering"] = "no"
    return resp


def _snapshot(database: Database, catalogue: CatalogueCache, ids: list[int] | None) -> list:
    with database.reading() as s:
        rows = fleet(s, ids)
    return fleet_briefs(rows, catalogue.get().units)

"""Live status, read from the database only (the poller writes it; no view waits on a host):
every host's health and facts, one host's services, metrics series, and "refresh now"."""

from __future__ import annotations

import time
from collections.abc import Iterator

from flask import Blueprint, Response, current_app, jsonify, request, stream_with_context
from sqlalchemy import select

from kernel.exceptions import InvalidInput, RateLimited
from kernel.server.core.db import Database
from kernel.server.core.events import Releasing
from kernel.server.core.sse import frame
from kernel.server.inventory.servers import get_server
from kernel.server.models.servers import Server
from kernel.server.models.status import HostStatus, MetricSample
from kernel.server.services.cache import CatalogueCache
from kernel.server.status.queries import fleet, fleet_briefs, host_json, host_page
from kernel.server.status.schemas import (
    HostAnswer,
    HostServicesAnswer,
    MetricsAnswer,
    MetricsQuery,
    Refresh,
    Refreshing,
    StatusAnswer,
    StatusEventsQuery,
    StatusList,
)
from kernel.server.web import audit, context
from kernel.server.web.access import role
from kernel.server.web.endpoint import endpoint

bp = Blueprint("status", __name__, url_prefix="/api/v1")
MAX_POINTS = 20000  # per series answer; ask for a shorter range for more detail


@bp.get("/status")
@role("viewer")
@endpoint("every host's health, facts and last metrics; the server's replicas",
          query=StatusList, answers={200: StatusAnswer})  # fmt: skip
def all_hosts(query: StatusList) -> Response:
    """In name order, a page at a time (``?limit=``, up to 1000; ``?after=`` the ``next`` of
    the page before), as ``GET /api/v1/servers``."""
    rows, total, cursor = host_page(context.session(), query.limit, query.after)
    p = context.poller()
    return jsonify(
        {
            "hosts": [host_json(srv, st) for srv, st in rows],
            "total": total,
            "next": cursor,
            "poller": {
                "running": p.running,
                "interval": p.interval,
                "offline_after": p.offline_after,
                "last_round": p.last_round,
            },
            "replicas": context.membership().replicas(),
        }
    )


@bp.get("/servers/<int:server_id>/status")
@role("viewer")
@endpoint("one host's health, facts, metrics and unit states", answers={200: HostAnswer})
def one_host(server_id: int) -> Response:
    s = context.session()
    srv = get_server(s, server_id)
    return jsonify(host_json(srv, s.get(HostStatus, srv.id), units=True))


@bp.get("/servers/<int:server_id>/services")
@role("viewer")
@endpoint("each catalogue service's state on this host", answers={200: HostServicesAnswer})
def host_services(server_id: int) -> Response:
    """Each catalogue service's unit state on this host, as of the last successful probe."""
    s = context.session()
    srv = get_server(s, server_id)
    st = s.get(HostStatus, srv.id)
    units = (st.units or {}) if st is not None else {}
    services = []
    for svc in context.catalogue().get():
        raw = units.get(svc.unit) if svc.unit else None
        services.append(
            {
                "service": svc.name,
                "unit": svc.unit or None,
                "state": raw if isinstance(raw, dict) else None,
                "installed": bool(raw and raw.get("installed")),
                "active": bool(raw and raw.get("active")),
                "failed": bool(raw and raw.get("failed")),
            }
        )
    return jsonify(
        {
            "server": srv.name,
            "health": st.state if st is not None else "unknown",
            "as_of": st.to_json()["last_ok_at"] if st is not None else None,
            "services": services,
        }
    )


@bp.get("/servers/<int:server_id>/metrics")
@role("viewer")
@endpoint("metrics series", query=MetricsQuery, answers={200: MetricsAnswer})
def metrics(server_id: int, query: MetricsQuery) -> Response:
    """Series ``{name: [[t, value], …]}``: ``?since=&until=`` (Unix seconds; default the last
    hour), ``?names=cpu_percent,load1`` (default all). Points older than a day are 5-minute
    means; ``counts`` says how many samples each point stands for."""
    s = context.session()
    srv = get_server(s, server_id)
    now = time.time()
    until = now if query.until is None else query.until
    since = until - 3600 if query.since is None else query.since
    if since > until:
        raise InvalidInput("'since' must not be after 'until'")
    names = query.metric_names()
    rows = s.execute(
        select(MetricSample.t, MetricSample.count, MetricSample.values)
        .where(MetricSample.server_id == srv.id, MetricSample.t >= since, MetricSample.t <= until)
        .order_by(MetricSample.t)
        .limit(MAX_POINTS + 1)
    ).all()
    truncated = len(rows) > MAX_POINTS
    rows = rows[:MAX_POINTS]
    series: dict[str, list[list[float]]] = {n: [] for n in names}
    for t, _count, values in rows:
        for n in names:
            v = (values or {}).get(n)
            if v is not None:
                series[n].append([round(t, 3), v])
    return jsonify(
        {
            "server": srv.name,
            "since": since,
            "until": until,
            "times": [round(t, 3) for t, _, _ in rows],
            "counts": [c for _, c, _ in rows],
            "series": series,
            "truncated": truncated,
        }
    )


@bp.post("/status/refresh")
@role("operator")
@endpoint("probe all hosts (or the named ones) now; answers at once", body=Refresh,
          body_required=False, answers={202: Refreshing})  # fmt: skip
def refresh_all(body: Refresh) -> tuple[Response, int]:
    """Probe now (all hosts, or ``{"servers": [names]}``); answers at once."""
    names = body.servers
    ids: list[int] | None = None
    if names is not None:
        s = context.session()
        found = dict(
            s.execute(
                select(Server.name, Server.id).where(
                    Server.name.in_(names), Server.removed_at.is_(None)
                )
            ).all()
        )
        missing = sorted(set(names) - set(found))
        if missing:
            raise InvalidInput(f"no such server(s): {', '.join(n[:64] for n in missing[:20])}")
        ids = sorted(found.values())
    audit.note("status.refresh", target="status", hosts=names or ["*"])
    return _refresh(ids)


@bp.post("/servers/<int:server_id>/status/refresh")
@role("operator")
@endpoint("probe this host now; answers at once", answers={202: Refreshing})
def refresh_one(server_id: int) -> tuple[Response, int]:
    srv = get_server(context.session(), server_id)
    audit.note("status.refresh", target=f"server {srv.name}", hosts=[srv.name])
    return _refresh([srv.id])


def _refresh(ids: list[int] | None) -> tuple[Response, int]:
    started = context.poller().refresh(ids)
    msg = "probing now" if started else "the poller is not running in this process"
    return jsonify({"refreshing": started, "message": msg}), 202


# -- live status over server-sent events (GET /api/v1/status/events) ------------------------------
# A snapshot of every host's brief (status/brief.py), then a ``host`` event whenever the poller
# stores a probe that changed a host's state, unit states or figures (status/feed.py).
# Resumable with ``Last-Event-ID`` within one server process, like a job's stream; docs/api.md.
events_bp = Blueprint("status_events", __name__, url_prefix="/api/v1/status")
KEEPALIVE = 15.0


@events_bp.get("/events")
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


blueprints = (bp, events_bp)

"""Live status, read from the database only (the poller writes it; no view waits on a host):
every host's health and facts, one host's services, metrics series, and "refresh now"."""

from __future__ import annotations

import time

from flask import Blueprint, Response, jsonify, request
from sqlalchemy import select

from kernel.exceptions import InvalidInput
from kernel.server.inventory.servers import get_server
from kernel.server.models.servers import Server
from kernel.server.models.status import HostStatus, MetricSample
from kernel.server.status.queries import host_json, host_rows
from kernel.server.web import audit, context
from kernel.server.web.access import role
from kernel.server.web.params import json_body, reject_unknown, str_arg

bp = Blueprint("status", __name__, url_prefix="/api/v1")
MAX_POINTS = 20000  # per series answer; ask for a shorter range for more detail
METRICS = (
    "cpu_percent",
    "load1",
    "load5",
    "load15",
    "mem_total",
    "mem_used",
    "swap_total",
    "swap_used",
    "uptime",
    "disk_total",
    "disk_used",
)


@bp.get("/status")
@role("viewer")
def all_hosts() -> Response:
    rows = host_rows(context.session())
    p = context.poller()
    return jsonify(
        {
            "hosts": [host_json(srv, st) for srv, st in rows],
            "poller": {
                "running": p.running,
                "interval": p.interval,
                "offline_after": p.offline_after,
                "last_round": p.last_round,
            },
        }
    )


@bp.get("/servers/<int:server_id>/status")
@role("viewer")
def one_host(server_id: int) -> Response:
    s = context.session()
    srv = get_server(s, server_id)
    return jsonify(host_json(srv, s.get(HostStatus, srv.id), units=True))


@bp.get("/servers/<int:server_id>/services")
@role("viewer")
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
def metrics(server_id: int) -> Response:
    """Series ``{name: [[t, value], …]}``: ``?since=&until=`` (Unix seconds; default the last
    hour), ``?names=cpu_percent,load1`` (default all). Points older than a day are 5-minute
    means; ``counts`` says how many samples each point stands for."""
    s = context.session()
    srv = get_server(s, server_id)
    now = time.time()
    until = _time_arg("until", now)
    since = _time_arg("since", until - 3600)
    if since > until:
        raise InvalidInput("'since' must not be after 'until'")
    names = _names_arg()
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
def refresh_all() -> tuple[Response, int]:
    """Probe now (all hosts, or ``{"servers": [names]}``); answers at once."""
    data = json_body() if request.data else {}
    reject_unknown(data, {"servers"})
    names = data.get("servers")
    ids: list[int] | None = None
    if names is not None:
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise InvalidInput("'servers' must be a list of server names")
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
def refresh_one(server_id: int) -> tuple[Response, int]:
    srv = get_server(context.session(), server_id)
    audit.note("status.refresh", target=f"server {srv.name}", hosts=[srv.name])
    return _refresh([srv.id])


def _refresh(ids: list[int] | None) -> tuple[Response, int]:
    started = context.poller().refresh(ids)
    msg = "probing now" if started else "the poller is not running in this process"
    return jsonify({"refreshing": started, "message": msg}), 202


def _time_arg(name: str, default: float) -> float:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise InvalidInput(f"query argument '{name}' must be Unix seconds") from None
    if not 0 <= value <= 2**40:
        raise InvalidInput(f"query argument '{name}' is out of range")
    return value


def _names_arg() -> list[str]:
    raw = str_arg("names", max_len=1000)
    if not raw:
        return list(METRICS)
    names = [n.strip() for n in raw.split(",") if n.strip()]
    unknown = sorted(set(names) - set(METRICS))
    if unknown:
        raise InvalidInput(
            f"unknown metric(s): {', '.join(n[:40] for n in unknown[:10])}; "
            f"known: {', '.join(METRICS)}"
        )
    return names

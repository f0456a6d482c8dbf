"""Reading status from the database (the poller writes it; no page or API call waits on a
host)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, tuple_
from sqlalchemy.orm import Session

from kernel.server.core.paging import decode_cursor, encode_cursor
from kernel.server.models.servers import Server
from kernel.server.models.status import HostStatus
from kernel.server.status.brief import brief

HostRow = tuple[Server, HostStatus | None]


_LIVE = (Server.removed_at.is_(None), Server.agent_url.is_not(None))  # joined, not removed
_HOSTS = (
    select(Server, HostStatus)
    .outerjoin(HostStatus, HostStatus.server_id == Server.id)
    .where(*_LIVE)
    .order_by(Server.name, Server.id)
)


def host_rows(s: Session) -> list[HostRow]:
    """Live joined servers, by name, with their last status (None before the first probe)."""
    return [(srv, st) for srv, st in s.execute(_HOSTS).all()]


def host_page(s: Session, limit: int, after: str | None) -> tuple[list[HostRow], int, str | None]:
    """A page of `host_rows`: the rows, how many there are in all, and the cursor of the
    next page (None on the last)."""
    q = _HOSTS
    if after is not None:
        name, id_ = decode_cursor(after)
        q = q.where(tuple_(Server.name, Server.id) > tuple_(name, id_))
    rows: list[HostRow] = [(srv, st) for srv, st in s.execute(q.limit(limit + 1)).all()]
    more = len(rows) > limit
    rows = rows[:limit]
    if after is None and not more:  # one page holds them all: no count needed
        total = len(rows)
    else:
        total = s.scalar(select(func.count()).select_from(Server).where(*_LIVE)) or 0
    cursor = encode_cursor(rows[-1][0].name, rows[-1][0].id) if more else None
    return rows, total, cursor


def host_json(srv: Server, st: HostStatus | None, *, units: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"server": srv.name, "server_id": srv.id, "server_state": srv.state}
    if st is None:
        out.update(state="unknown", failures=0, probed_at=None, facts={}, metrics={})
    else:
        out.update(st.to_json())
    if units:
        out["units"] = (st.units or {}) if st is not None else {}
    return out


def fleet_index(s: Session) -> list[dict[str, Any]]:
    """Every live server, by name, with only what the dashboard filters and counts on (no
    facts, metrics or units): at 10 000 servers the whole rows cost ten times more."""
    os_name = func.coalesce(
        HostStatus.facts["os_name"].as_string(),
        HostStatus.facts["os"].as_string(),
        Server.facts["os_name"].as_string(),
        Server.facts["os"].as_string(),
    )
    q = (
        select(
            Server.id,
            Server.name,
            Server.state,
            Server.agent_url,
            Server.tags,
            Server.description,
            HostStatus.state.label("health"),
            os_name.label("os"),
        )
        .outerjoin(HostStatus, HostStatus.server_id == Server.id)
        .where(Server.removed_at.is_(None))
        .order_by(Server.name)
    )
    return [dict(row) for row in s.execute(q).mappings()]


def fleet(s: Session, server_ids: list[int] | None = None) -> list[dict[str, Any]]:
    """Every live server (pending ones too), by name, with what its last probe said: one
    column query (no ORM entities), as a page of 1000 servers needs."""
    q = (
        select(
            Server.id,
            Server.name,
            Server.state,
            Server.agent_url,
            Server.tags,
            Server.description,
            Server.facts.label("server_facts"),
            Server.last_error,
            HostStatus.state.label("health"),
            HostStatus.facts,
            HostStatus.metrics,
            HostStatus.units,
            HostStatus.probed_at,
            HostStatus.last_error.label("probe_error"),
        )
        .outerjoin(HostStatus, HostStatus.server_id == Server.id)
        .where(Server.removed_at.is_(None))
        .order_by(Server.name)
    )
    if server_ids is not None:
        q = q.where(Server.id.in_(server_ids))
    return [dict(row) for row in s.execute(q).mappings()]


def fleet_briefs(rows: list[dict[str, Any]], watched: list[str]) -> list[dict[str, Any]]:
    """`brief` of each `fleet` row, with the catalogue's units."""
    return [
        brief(
            r["id"],
            r["name"],
            r["state"],
            r["health"] or "unknown",
            r["units"],
            r["metrics"],
            watched,
        )
        for r in rows
    ]

"""Reading status from the database (the poller writes it; no page or API call waits on a
host)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from kernel.server.models.servers import Server
from kernel.server.models.status import HostStatus


def host_rows(s: Session) -> list[tuple[Server, HostStatus | None]]:
    """Live joined servers with their last status (None before the first probe)."""
    rows = s.execute(
        select(Server, HostStatus)
        .outerjoin(HostStatus, HostStatus.server_id == Server.id)
        .where(Server.removed_at.is_(None), Server.agent_url.is_not(None))
        .order_by(Server.name)
    ).all()
    return [(srv, st) for srv, st in rows]


def host_json(srv: Server, st: HostStatus | None, *, units: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"server": srv.name, "server_id": srv.id, "server_state": srv.state}
    if st is None:
        out.update(state="unknown", failures=0, probed_at=None, facts={}, metrics={})
    else:
        out.update(st.to_json())
    if units:
        out["units"] = (st.units or {}) if st is not None else {}
    return out

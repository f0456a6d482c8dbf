"""Where catalogue services run: each unit's state per host, from the last probes."""

from __future__ import annotations

from typing import Any

from kernel.server.models.servers import Server
from kernel.server.models.status import HostStatus
from kernel.server.services import catalog
from kernel.server.status.health import service_spread
from kernel.server.status.report import UnitState


def unit_state(data: Any) -> UnitState | None:
    """A stored unit state (probe.report_json's shape) back as a UnitState."""
    if not isinstance(data, dict):
        return None
    return UnitState(
        unit=str(data.get("unit", "")),
        load_state=str(data.get("load_state", "")),
        active_state=str(data.get("active_state", "")),
        sub_state=str(data.get("sub_state", "")),
        unit_file_state=str(data.get("unit_file_state", "")),
    )


def service_hosts(svc: catalog.Service, rows: list[tuple[Server, HostStatus | None]]) -> Any:
    """Where one service's unit is installed/active/failed, and its state on each host."""
    states: dict[str, dict[str, UnitState]] = {}
    hosts = []
    for srv, st in rows:
        raw = (st.units or {}).get(svc.unit) if st is not None and svc.unit else None
        us = unit_state(raw)
        if us is not None:
            states[srv.name] = {svc.unit: us}
        hosts.append(
            {
                "server": srv.name,
                "server_id": srv.id,
                "health": st.state if st is not None else "unknown",
                "probed_at": st.to_json()["probed_at"] if st is not None else None,
                "unit": raw if isinstance(raw, dict) else None,
            }
        )
    spread = service_spread(svc.unit, states) if svc.unit else None
    return {
        "installed": list(spread.installed) if spread else [],
        "active": list(spread.active) if spread else [],
        "failed": list(spread.failed) if spread else [],
        "hosts": hosts,
    }


def service_json(svc: catalog.Service, *, detail: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": svc.name,
        "title": svc.title,
        "display_name": svc.display_name,
        "description": svc.description,
        "unit": svc.unit or None,
        "deployable": svc.deployable,
        "problems": list(svc.problems),
    }
    if detail:
        out["scripts"] = {n: sc.sha256 for n, sc in sorted(svc.scripts.items())}
        out["artifacts"] = [{"path": a.path, "size": a.size} for a in svc.artifacts]
    return out


def catalogue_json(
    cat: catalog.Catalogue, rows: list[tuple[Server, HostStatus | None]], scanned_at: float
) -> dict[str, Any]:
    services = []
    for svc in cat:
        spread = service_hosts(svc, rows)
        item = service_json(svc)
        item.update({k: spread[k] for k in ("installed", "active", "failed")})
        services.append(item)
    return {
        "services": services,
        "problems": list(cat.problems),
        "scanned_at": round(scanned_at, 3),
    }

"""A host at a glance (pure): what the dashboard shows of one server and what the status
event stream sends when it changes — one display state, each watched unit's state as one
word, and the few figures of its last probe."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

UNIT_WORDS = ("active", "inactive", "failed", "activating", "deactivating", "missing")


def display_state(server_state: str, health: str) -> str:
    """pending / init_failed (the inventory's) win; then what the probes say; before any
    probe, the inventory's online / offline."""
    if server_state in ("pending", "init_failed"):
        return server_state
    if health in ("online", "offline"):
        return health
    return server_state if server_state in ("online", "offline") else "unknown"


def unit_word(raw: Any) -> str:
    """A stored unit state (probe.report_json) as one word; "missing" when not installed."""
    if not isinstance(raw, Mapping) or not raw.get("installed"):
        return "missing"
    active = str(raw.get("active_state") or "")
    return active if active in UNIT_WORDS else "inactive"


def _fraction(used: Any, total: Any) -> float | None:
    if isinstance(used, int | float) and isinstance(total, int | float) and total > 0:
        return round(min(max(used / total, 0.0), 1.0), 4)
    return None


def figures(metrics: Mapping[str, Any] | None) -> dict[str, float | None]:
    """CPU %, memory / disk use (fractions), load and uptime from a host's last metrics."""
    m = metrics or {}
    disks = m.get("disks") or []
    disk_total = sum(d.get("total") or 0 for d in disks if isinstance(d, Mapping))
    disk_used = sum(d.get("used") or 0 for d in disks if isinstance(d, Mapping))
    cpu = m.get("cpu_percent_interval", m.get("cpu_percent"))
    return {
        "cpu": round(float(cpu), 1) if isinstance(cpu, int | float) else None,
        "mem": _fraction(m.get("mem_used"), m.get("mem_total")),
        "disk": _fraction(disk_used, disk_total),
        "load1": m.get("load1") if isinstance(m.get("load1"), int | float) else None,
        "uptime": m.get("uptime") if isinstance(m.get("uptime"), int | float) else None,
    }


def brief(
    server_id: int,
    name: str,
    server_state: str,
    health: str,
    units: Mapping[str, Any] | None,
    metrics: Mapping[str, Any] | None,
    watched: list[str] | None = None,
) -> dict[str, Any]:
    """The host's brief; ``watched`` units (the catalogue's) are listed even when a probe has
    not reported them yet."""
    got = units or {}
    names = watched if watched is not None else sorted(got)
    return {
        "server_id": server_id,
        "server": name,
        "state": display_state(server_state, health),
        "server_state": server_state,
        "health": health,
        "units": {u: unit_word(got.get(u)) for u in names},
        "figures": figures(metrics),
    }


def changes(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> list[str]:
    """What differs between two briefs of one host: "state", "units", "figures"."""
    if before is None:
        return ["state", "units", "figures"]
    return [k for k in ("state", "units", "figures") if before.get(k) != after.get(k)]

"""Host health and service spread (pure functions): `next_health` decides online/offline
from consecutive probe results; `service_spread` says on which hosts a unit is installed,
active or failed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from kernel.server.status.report import UnitState


@dataclass(frozen=True)
class HostHealth:
    state: str = "unknown"  # unknown (never probed) | online | offline
    failures: int = 0  # consecutive failed probes
    last_error: str | None = None
    last_error_at: float | None = None
    last_ok_at: float | None = None


DEFAULT_OFFLINE_AFTER = 2  # so a poller marks a cut-off host offline within two intervals


def next_health(
    prev: HostHealth,
    *,
    ok: bool,
    at: float,
    error: str | None = None,
    offline_after: int = DEFAULT_OFFLINE_AFTER,
) -> HostHealth:
    """The health after one probe: online on success; offline after `offline_after`
    consecutive failures (one lost probe does not flap a host). The last error is kept."""
    if offline_after < 1:
        raise ValueError("offline_after must be at least 1")
    if ok:
        return replace(prev, state="online", failures=0, last_ok_at=at)
    failures = prev.failures + 1
    state = "offline" if failures >= offline_after else prev.state
    return replace(
        prev,
        state=state,
        failures=failures,
        last_error=(error or "probe failed")[:2000],
        last_error_at=at,
    )


@dataclass(frozen=True)
class ServiceSpread:
    unit: str
    installed: tuple[str, ...] = ()  # host names, sorted
    active: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()


def service_spread(unit: str, states: Mapping[str, Mapping[str, UnitState]]) -> ServiceSpread:
    """Where `unit` is installed/active/failed, from each host's last unit states."""
    inst, act, fail = [], [], []
    for host in sorted(states):
        st = states[host].get(unit)
        if st is None:
            continue
        if st.installed:
            inst.append(host)
        if st.active:
            act.append(host)
        if st.failed:
            fail.append(host)
    return ServiceSpread(unit, tuple(inst), tuple(act), tuple(fail))

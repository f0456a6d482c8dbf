"""What a probe says about a host (facts, one metrics sample, unit states, warnings), as
values: status/sections.py fills them from each section's text, the poller stores them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Facts:
    hostname: str | None = None
    os_id: str | None = None  # "debian"
    os_version: str | None = None  # "12"
    os_name: str | None = None  # "Debian GNU/Linux 12 (bookworm)"
    kernel: str | None = None  # "6.1.0-18-amd64"
    arch: str | None = None  # "x86_64"
    cpu_count: int | None = None
    systemd: str | None = None  # is-system-running: running, degraded, offline, …
    bash: str | None = None  # BASH_VERSION (environment check only)
    systemd_version: str | None = None  # "252" (environment check only)


@dataclass(frozen=True)
class CpuTimes:
    """Aggregate jiffies from /proc/stat; two of them give CPU usage between them."""

    total: int
    idle: int  # idle + iowait


@dataclass(frozen=True)
class Disk:
    mount: str
    device: str
    fstype: str
    total: int  # bytes
    used: int
    available: int


@dataclass(frozen=True)
class Metrics:
    cpu_percent: float | None = None  # only with probe_script(cpu_window=…); else None
    cpu_times: CpuTimes | None = None  # for usage over the whole poll interval
    load1: float | None = None
    load5: float | None = None
    load15: float | None = None
    mem_total: int | None = None  # bytes
    mem_available: int | None = None
    swap_total: int | None = None
    swap_free: int | None = None
    uptime: float | None = None  # seconds
    disks: tuple[Disk, ...] = ()

    @property
    def mem_used(self) -> int | None:
        if self.mem_total is None or self.mem_available is None:
            return None
        return max(0, self.mem_total - self.mem_available)

    @property
    def swap_used(self) -> int | None:
        if self.swap_total is None or self.swap_free is None:
            return None
        return max(0, self.swap_total - self.swap_free)


@dataclass(frozen=True)
class UnitState:
    unit: str  # as asked for, e.g. "sums.service"
    load_state: str = ""  # loaded, not-found, masked, bad-setting, error
    active_state: str = ""  # active, inactive, failed, activating, deactivating, reloading
    sub_state: str = ""  # running, dead, exited, …
    unit_file_state: str = ""  # enabled, disabled, static, masked, "" when no file

    @property
    def installed(self) -> bool:
        return self.load_state not in ("", "not-found")

    @property
    def active(self) -> bool:
        return self.active_state == "active"

    @property
    def failed(self) -> bool:
        return self.active_state == "failed"


@dataclass(frozen=True)
class ProbeReport:
    facts: Facts = field(default_factory=Facts)
    metrics: Metrics = field(default_factory=Metrics)
    units: dict[str, UnitState] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    complete: bool = False  # the end marker was seen


def report_json(report: ProbeReport) -> dict[str, Any]:
    """The report as JSON-ready dicts, with the derived values (mem_used, swap_used, and each
    unit's installed/active/failed) spelled out — for storage and the API. (Written out by
    hand, not `dataclasses.asdict`: this runs for every host in every round.)"""
    m = report.metrics
    times = m.cpu_times
    return {
        "facts": dict(report.facts.__dict__),
        "metrics": {
            "cpu_percent": m.cpu_percent,
            "cpu_times": None if times is None else {"total": times.total, "idle": times.idle},
            "load1": m.load1,
            "load5": m.load5,
            "load15": m.load15,
            "mem_total": m.mem_total,
            "mem_available": m.mem_available,
            "swap_total": m.swap_total,
            "swap_free": m.swap_free,
            "uptime": m.uptime,
            "disks": [dict(d.__dict__) for d in m.disks],
            "mem_used": m.mem_used,
            "swap_used": m.swap_used,
        },
        "units": {
            name: {
                **st.__dict__,
                "installed": st.installed,
                "active": st.active,
                "failed": st.failed,
            }
            for name, st in report.units.items()
        },
        "warnings": list(report.warnings),
        "complete": report.complete,
    }

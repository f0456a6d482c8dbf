"""What the status API takes and answers (core/inputs.py explains the declarations)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from kernel.exceptions import InvalidInput
from kernel.server.core.inputs import Answer, Body, Name, NoNul, Query
from kernel.server.core.paging import PAGE_MAX

METRICS = (
    "cpu_percent", "load1", "load5", "load15", "mem_total", "mem_used", "swap_total",
    "swap_used", "uptime", "disk_total", "disk_used",
)  # fmt: skip
UnixTime = Annotated[float, Field(ge=0, le=2**40, allow_inf_nan=False)]


class StatusList(Query):
    """``?after=`` is the ``next`` of the page before (pages follow the names' order)."""

    limit: Annotated[int, Field(ge=1, le=PAGE_MAX)] = PAGE_MAX
    after: Annotated[str, Field(max_length=200), NoNul] | None = None


class MetricsQuery(Query):
    since: UnixTime | None = None  # default: an hour before `until`
    until: UnixTime | None = None  # default: now
    names: Annotated[str, Field(max_length=1000), NoNul] | None = None  # comma-separated

    def metric_names(self) -> list[str]:
        if not self.names:
            return list(METRICS)
        names = [n.strip() for n in self.names.split(",") if n.strip()]
        unknown = sorted(set(names) - set(METRICS))
        if unknown:
            raise InvalidInput(
                f"unknown metric(s): {', '.join(n[:40] for n in unknown[:10])}; "
                f"known: {', '.join(METRICS)}"
            )
        return names


class Refresh(Body):
    servers: Annotated[list[Name], Field(max_length=10000)] | None = None  # default: all


# -- answers ------------------------------------------------------------------------------------
class HostAnswer(Answer):
    server: str
    server_id: int
    server_state: str
    state: str  # unknown | online | offline
    failures: int
    probed_at: str | None
    facts: dict[str, Any]
    metrics: dict[str, Any]
    last_error: str | None = None
    last_error_at: str | None = None
    last_ok_at: str | None = None
    duration: float | None = None
    warnings: list[str] | None = None
    units: dict[str, Any] | None = None  # one host's answer: every catalogue unit's state


class PollerAnswer(Answer):
    running: bool
    interval: float
    offline_after: int
    last_round: dict[str, Any]


class ReplicaAnswer(Answer):
    """One kernel-server process of this installation (docs/replicas.md)."""

    id: str
    host: str
    pid: int
    started_at: str | None
    seen_at: str | None
    alive: bool
    me: bool  # the one that answered


class StatusAnswer(Answer):
    hosts: list[HostAnswer]
    total: int  # joined live servers in all (every page)
    next: str | None  # ``?after=`` for the next page; null on the last
    poller: PollerAnswer
    replicas: list[ReplicaAnswer]


class HostService(Answer):
    service: str
    unit: str | None
    state: dict[str, Any] | None
    installed: bool
    active: bool
    failed: bool


class HostServicesAnswer(Answer):
    server: str
    health: str
    as_of: str | None
    services: list[HostService]


class MetricsAnswer(Answer):
    server: str
    since: float
    until: float
    times: list[float]
    counts: list[int]
    series: dict[str, list[list[float]]]
    truncated: bool


class Refreshing(Answer):
    refreshing: bool
    message: str


class StatusEventsQuery(Query):
    servers: Annotated[str, Field(max_length=20000), NoNul] | None = None  # ids, comma-separated

    def server_ids(self) -> list[int] | None:
        """Only these servers' changes (None: every server)."""
        if not self.servers:
            return None
        try:
            ids = sorted({int(part) for part in self.servers.split(",") if part.strip()})
        except ValueError:
            raise InvalidInput("'servers' must be server ids separated by commas") from None
        if any(not 0 < i < 2**31 for i in ids):
            raise InvalidInput("'servers' must be server ids separated by commas")
        return ids

"""The status tables: each host's last probe (health, facts, unit states) and its metrics
history. Declared on the server's Base; created by migration 0003."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from kernel.server.core.db import Base, UTCDateTime
from kernel.server.core.text import iso


class HostStatus(Base):
    """One row per probed server: what its last probe said, and its online/offline health
    (``health.next_health``). Rewritten by the poller each round."""

    __tablename__ = "host_status"

    server_id: Mapped[int] = mapped_column(
        ForeignKey("servers.id", ondelete="CASCADE"), primary_key=True
    )
    state: Mapped[str] = mapped_column(String(16), default="unknown")  # unknown|online|offline
    failures: Mapped[int] = mapped_column(Integer, default=0)  # consecutive failed probes
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_ok_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    probed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)  # last attempt
    duration: Mapped[float | None] = mapped_column(Float)  # seconds the last probe took
    facts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # last report's
    units: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # unit -> state dict
    warnings: Mapped[list[str]] = mapped_column(JSON, default=list)
    # The previous report's /proc/stat counters, for CPU usage over the whole interval.
    cpu_total: Mapped[int | None] = mapped_column(BigInteger)
    cpu_idle: Mapped[int | None] = mapped_column(BigInteger)

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "failures": self.failures,
            "last_error": self.last_error,
            "last_error_at": iso(self.last_error_at),
            "last_ok_at": iso(self.last_ok_at),
            "probed_at": iso(self.probed_at),
            "duration": self.duration,
            "facts": self.facts or {},
            "metrics": self.metrics or {},
            "warnings": list(self.warnings or []),
        }


class MetricSample(Base):
    """One metrics point of one host: a raw sample (count 1) or a 5-minute bucket mean."""

    __tablename__ = "metric_samples"
    __table_args__ = (Index("ix_metric_samples_server_t", "server_id", "t"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    server_id: Mapped[int] = mapped_column(ForeignKey("servers.id", ondelete="CASCADE"))
    t: Mapped[float] = mapped_column(Float)  # Unix seconds (bucket start for means)
    count: Mapped[int] = mapped_column(Integer, default=1)
    values: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)

"""Jobs and their runs (one per target server)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from kernel.server.core.db import Base, UTCDateTime, utcnow


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), default="command")
    title: Mapped[str] = mapped_column(String(255), default="")
    cmd: Mapped[str] = mapped_column(Text)
    stdin: Mapped[str | None] = mapped_column(Text)
    env: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    cwd: Mapped[str | None] = mapped_column(String(1024))
    timeout: Mapped[float] = mapped_column(Float, default=600.0)
    targets: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # how they were chosen
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # e.g. the init script
    state: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # Indexed for the alert rules that look at the jobs finished lately (migration 0006).
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, index=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))

    runs: Mapped[list[Run]] = relationship(back_populates="job", order_by="Run.server_name")


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (Index("ix_runs_state_job", "state", "job_id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # = the agent's exec id
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    server_id: Mapped[int] = mapped_column(ForeignKey("servers.id"), index=True)
    server_name: Mapped[str] = mapped_column(String(64))  # as it was when the job ran
    state: Mapped[str] = mapped_column(String(16), default="queued")
    exit_code: Mapped[int | None] = mapped_column(Integer)
    signal: Mapped[int | None] = mapped_column(Integer)
    stdout: Mapped[str] = mapped_column(Text, default="")
    stderr: Mapped[str] = mapped_column(Text, default="")
    truncated: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text)  # why it is unreachable/lost/…
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)  # journalled before sending
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    duration: Mapped[float | None] = mapped_column(Float)
    # The replica that sent it and follows it (cluster/membership.py); a run whose owner is
    # gone is adopted by another (re-attached by its id, never sent again).
    owner: Mapped[str | None] = mapped_column(String(36), index=True)

    job: Mapped[Job] = relationship(back_populates="runs")

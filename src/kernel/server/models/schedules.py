"""Schedules and their firings (docs/schedules.md; created by migration 0005).

A firing is claimed by inserting its row: (schedule_id, planned_at) is unique, and the row
is written in the same transaction as the job it starts, so a planned time is fired at most
once whatever restarts or replicas do."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from kernel.server.core.db import Base, UTCDateTime, utcnow

MISSED_POLICIES = ("skip", "run_once")
FIRING_STATES = ("fired", "skipped", "missed", "error")


class Schedule(Base):
    __tablename__ = "schedules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    # What each firing runs: a job's command (a script is ``bash -s`` with it on stdin).
    cmd: Mapped[str] = mapped_column(Text)
    stdin: Mapped[str | None] = mapped_column(Text)
    env: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    cwd: Mapped[str | None] = mapped_column(String(1024))
    timeout: Mapped[float] = mapped_column(Float, default=600.0)
    targets: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # resolved per firing
    cron: Mapped[str] = mapped_column(String(255))
    timezone: Mapped[str] = mapped_column(String(64))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    skip_if_running: Mapped[bool] = mapped_column(Boolean, default=False)
    missed: Mapped[str] = mapped_column(String(16), default="skip")  # MISSED_POLICIES
    # The next planned time not yet claimed (None while disabled): what the scheduler waits
    # for, and the claim's guard (it moves on only from the value it read).
    next_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, index=True)
    created_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Firing(Base):
    """One planned time of a schedule and what became of it: ``fired`` (its job), ``skipped``
    (the previous firing was still running), ``missed`` (the server was not running then;
    ``missed_count`` planned times in one row), ``error`` (no job could be made: the note
    says why, e.g. no server matches the targets)."""

    __tablename__ = "schedule_firings"
    __table_args__ = (UniqueConstraint("schedule_id", "planned_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    schedule_id: Mapped[int] = mapped_column(
        ForeignKey("schedules.id", ondelete="CASCADE"), index=True
    )
    planned_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    state: Mapped[str] = mapped_column(String(16))  # FIRING_STATES
    job_id: Mapped[int | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL"), index=True
    )
    note: Mapped[str | None] = mapped_column(Text)
    missed_count: Mapped[int] = mapped_column(Integer, default=0)
    by: Mapped[str] = mapped_column(String(64), default="scheduler")  # or who ran it by hand
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)  # claimed

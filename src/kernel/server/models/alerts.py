"""Alerts: rules, notification channels, the alerts they raise, and the notifications sent
for them (an outbox, one row per alert event and channel) with every delivery attempt.
Created by migration 0006 (docs/alerts.md)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from kernel.server.core.db import Base, UTCDateTime, utcnow
from kernel.server.core.sealing import SealedText

ALERT_STATES = ("pending", "open", "resolving", "resolved")
NOTIFICATION_STATES = ("queued", "sending", "sent", "failed", "cancelled")


class AlertRule(Base):
    __tablename__ = "alert_rules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # offline | service | job | disk | load
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # the kind's thresholds
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)  # empty: every server
    channels: Mapped[list[int] | None] = mapped_column(JSON)  # None: every enabled channel
    hold_open: Mapped[float] = mapped_column(Float, default=0.0)  # seconds
    hold_resolve: Mapped[float] = mapped_column(Float, default=60.0)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class AlertChannel(Base):
    __tablename__ = "alert_channels"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    url: Mapped[str] = mapped_column(SealedText(4096))  # an apprise URL: it holds secrets
    service: Mapped[str] = mapped_column(String(64), default="")  # apprise's name for it
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Alert(Base):
    """One problem on one subject: raised (pending → open), cleared (resolving → resolved).

    ``key`` names (rule, server, subject); at most one alert per key is not resolved (a
    partial unique index), so two evaluators can never open the same problem twice."""

    __tablename__ = "alerts"
    __table_args__ = (
        Index(
            "uq_alerts_live_key",
            "key",
            unique=True,
            sqlite_where=text("resolved_at IS NULL"),
            postgresql_where=text("resolved_at IS NULL"),
        ),
        Index("ix_alerts_state", "state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(64))  # sha256 of (rule, server, subject)
    rule_id: Mapped[int | None] = mapped_column(
        ForeignKey("alert_rules.id", ondelete="SET NULL"), index=True
    )
    rule_name: Mapped[str] = mapped_column(String(64))  # as it was
    kind: Mapped[str] = mapped_column(String(16))
    server_id: Mapped[int | None] = mapped_column(ForeignKey("servers.id"), index=True)
    server_name: Mapped[str | None] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(512))  # "offline", "disk /var", "service sums"
    state: Mapped[str] = mapped_column(String(16), default="pending")
    summary: Mapped[str] = mapped_column(Text, default="")  # the latest description
    value: Mapped[float | None] = mapped_column(Float)  # the latest measured value, if any
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    since: Mapped[dt.datetime] = mapped_column(UTCDateTime)  # the problem began
    opened_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    clear_since: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)  # while resolving
    resolved_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, index=True)
    resolution: Mapped[str | None] = mapped_column(String(64))  # cleared, rule removed, …
    last_seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class AlertNotification(Base):
    """A message owed to one channel for one alert event (open, resolve) or a test: queued in
    the transaction of the event, then delivered (and retried) by the sender."""

    __tablename__ = "alert_notifications"
    __table_args__ = (Index("ix_alert_notifications_state_next", "state", "next_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alert_id: Mapped[int | None] = mapped_column(
        ForeignKey("alerts.id", ondelete="CASCADE"), index=True
    )
    channel_id: Mapped[int | None] = mapped_column(
        ForeignKey("alert_channels.id", ondelete="SET NULL"), index=True
    )
    channel_name: Mapped[str] = mapped_column(String(64))
    event: Mapped[str] = mapped_column(String(16))  # open | resolve | test
    batch: Mapped[str] = mapped_column(String(32), default="")  # one evaluation round
    title: Mapped[str] = mapped_column(String(255))
    body: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    claimed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    done_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class AlertDelivery(Base):
    """One attempt to deliver one notification: sent, or failed with the error."""

    __tablename__ = "alert_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    notification_id: Mapped[int] = mapped_column(
        ForeignKey("alert_notifications.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    ok: Mapped[bool] = mapped_column(Boolean)
    error: Mapped[str | None] = mapped_column(Text)
    duration: Mapped[float] = mapped_column(Float, default=0.0)


class AlertUnitSeen(Base):
    """A catalogue unit seen active on a server: its "inactive" then is a problem (a unit
    that was never started is not)."""

    __tablename__ = "alert_units"

    server_id: Mapped[int] = mapped_column(
        ForeignKey("servers.id", ondelete="CASCADE"), primary_key=True
    )
    unit: Mapped[str] = mapped_column(String(255), primary_key=True)
    active_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

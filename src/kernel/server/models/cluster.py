"""The replicas of one installation (several kernel-server processes on one PostgreSQL):
who is alive, and the bulky live events passed between them by reference."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from kernel.server.core.db import Base, UTCDateTime, utcnow


class Replica(Base):
    """One server process; alive while its heartbeat (``seen_at``) is recent."""

    __tablename__ = "replicas"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    host: Mapped[str] = mapped_column(String(255), default="")
    pid: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class EventPayload(Base):
    """A live event too big for a NOTIFY (8000 bytes): the notification carries its id."""

    __tablename__ = "event_payloads"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)

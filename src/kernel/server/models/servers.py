"""Servers: the inventory, enrollment tokens, and init script records."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column, validates

from kernel.server.core.db import Base, UTCDateTime, utcnow
from kernel.server.core.sealing import SealedText
from kernel.server.core.text import iso

SERVER_STATES = ("pending", "online", "offline", "init_failed")


def name_key(name: str) -> str:
    """What makes two server names the same one: case and trailing dots do not count."""
    return name.rstrip(".").lower()


class Server(Base):
    __tablename__ = "servers"
    # Removed servers keep their rows (job history points at them) but free their name.
    # Unique by `name_key` (case and trailing dots aside: "Web1." is "web1"), among the live.
    __table_args__ = (
        Index(
            "uq_servers_live_name_key",
            "name_key",
            unique=True,
            sqlite_where=text("removed_at IS NULL"),
            postgresql_where=text("removed_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    name_key: Mapped[str] = mapped_column(String(64))  # name_key(name), set with the name
    agent_url: Mapped[str | None] = mapped_column(String(255))
    agent_key: Mapped[str] = mapped_column(SealedText(255))  # sealed at rest (core/sealing.py)
    tls_fingerprint: Mapped[str | None] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text, default="")
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    facts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    last_seen: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    removed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    @validates("name")
    def _keep_key(self, _field: str, name: str) -> str:
        self.name_key = name_key(name)
        return name

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "agent_url": self.agent_url,
            "tls_fingerprint": self.tls_fingerprint,
            "description": self.description,
            "tags": list(self.tags or []),
            "state": self.state,
            "facts": self.facts or {},
            "last_seen": iso(self.last_seen),
            "last_error": self.last_error,
            "created_at": iso(self.created_at),
            "removed_at": iso(self.removed_at),
        }


class EnrollToken(Base):
    __tablename__ = "enroll_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    server_id: Mapped[int] = mapped_column(ForeignKey("servers.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class InitRecord(Base):
    """One attempt of one init script on one server (added by migration 0002)."""

    __tablename__ = "init_records"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    server_id: Mapped[int] = mapped_column(ForeignKey("servers.id"), index=True)
    script: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    state: Mapped[str] = mapped_column(String(16), default="queued")  # a run state
    exit_code: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    def to_json(self) -> dict[str, Any]:
        return {
            "script": self.script,
            "sha256": self.sha256,
            "job_id": self.job_id,
            "state": self.state,
            "exit_code": self.exit_code,
            "created_at": iso(self.created_at),
            "finished_at": iso(self.finished_at),
        }

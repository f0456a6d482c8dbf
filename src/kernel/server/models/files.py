"""Uploaded files waiting to be pushed to servers (docs/files.md; created by migration 0005).
The bytes are in ``<data dir>/files/<id>``; the row says what they are and until when they
are kept."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from kernel.server.core.db import Base, UTCDateTime, utcnow


class Upload(Base):
    __tablename__ = "file_uploads"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # also its file's name
    name: Mapped[str] = mapped_column(String(255), default="")  # as uploaded, for people
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    created_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)

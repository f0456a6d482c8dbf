"""The append-only audit log: who, from where, what, on which hosts, with what result.

`write` adds one line in the caller's transaction. Every mutating request is written by the
request hook (web/audit.py), the job runner adds a line when a job ends, and nothing ever
updates or deletes a line (the database refuses it: see the migrations)."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Table, insert
from sqlalchemy.orm import Session

from kernel.server.core.db import utcnow
from kernel.server.models.audit import AuditEntry

_INSERT = insert(cast(Table, AuditEntry.__table__))


def write(
    s: Session,
    *,
    actor: str,
    source: str,
    action: str,
    result: str,
    target: str = "",
    hosts: list[str] | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    # A prepared Core INSERT run in the caller's transaction (not an ORM object flushed at
    # commit): every job writes one, and the unit of work costs more than the insert.
    s.execute(
        _INSERT,
        {
            "at": utcnow(),
            "actor": actor[:64],
            "source": source[:64],
            "action": action[:64],
            "target": target[:255],
            "hosts": hosts or [],
            "detail": detail or {},
            "result": result[:255],
        },
    )

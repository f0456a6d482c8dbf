"""The append-only audit log: who, from where, what, on which hosts, with what result.

Every mutating request is written after it is answered (one place, so no view can forget);
views add what they know with :func:`note`. The job runner adds a line when a job ends.
"""

from __future__ import annotations

import logging
from typing import Any, cast

from flask import Blueprint, Flask, Response, g, jsonify, request
from sqlalchemy import Table, insert, select
from sqlalchemy.orm import Session

from . import context
from .access import MUTATING, actor, role, source_address
from .db import utcnow
from .models import AuditEntry
from .params import int_arg, str_arg

log = logging.getLogger(__name__)
_INSERT = insert(cast(Table, AuditEntry.__table__))
bp = Blueprint("audit", __name__, url_prefix="/api/v1/audit")


def note(
    action: str | None = None,
    target: str | None = None,
    hosts: list[str] | None = None,
    **detail: Any,
) -> None:
    """Describe the current request for its audit line."""
    if action:
        g.audit_action = action
    if target is not None:
        g.audit_target = target
    if hosts is not None:
        g.audit_hosts = hosts
    g.setdefault("audit_detail", {}).update(detail)


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


def write_with(s: Session) -> None:
    """Add this request's audit line ("ok") to the view's own transaction, so the change and
    its audit line commit together (and the hot path saves a transaction)."""
    write(
        s,
        actor=g.get("audit_actor") or actor(),
        source=source_address(),
        action=g.get("audit_action") or request.endpoint or "-",
        target=g.get("audit_target", ""),
        hosts=g.get("audit_hosts"),
        detail=g.get("audit_detail"),
        result="ok",
    )
    g.audit_written = True


def _after(resp: Response) -> Response:
    if request.method not in MUTATING or request.endpoint is None:
        return resp
    if g.get("audit_written") and resp.status_code < 400:
        return resp
    who = g.get("audit_actor") or actor()
    # The view is done with its session; end its transaction before taking the write lock.
    context.close_session()
    if resp.status_code < 400:
        result = "ok"
    else:
        body = resp.get_json(silent=True) if resp.is_json else None
        message = body.get("message", "") if isinstance(body, dict) else ""
        result = f"{resp.status_code} {message}".strip()
    try:
        with context.db().session() as s:
            write(
                s,
                actor=who,
                source=source_address(),
                action=g.get("audit_action") or request.endpoint,
                target=g.get("audit_target", ""),
                hosts=g.get("audit_hosts"),
                detail=g.get("audit_detail"),
                result=result,
            )
    except Exception:  # an audit failure must be loud in the log but not hide the answer
        log.exception("could not write the audit log")
    return resp


def init_app(app: Flask) -> None:
    app.after_request(_after)


@bp.get("")
@role("admin")
def list_entries() -> Response:
    """Newest first; ``?before=<id>`` pages back, ``?action=`` and ``?actor=`` filter."""
    limit = int_arg("limit", 100, 1, 1000)
    q = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    before = int_arg("before", None, 1, 2**62)
    if before:
        q = q.where(AuditEntry.id < before)
    if action := str_arg("action"):
        q = q.where(AuditEntry.action == action)
    if who := str_arg("actor"):
        q = q.where(AuditEntry.actor == who)
    rows = context.session().scalars(q).all()
    return jsonify({"entries": [r.to_json() for r in rows]})

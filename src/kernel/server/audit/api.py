"""The audit log over the API (/api/v1/audit, admin only)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify
from sqlalchemy import select

from kernel.server.models.audit import AuditEntry
from kernel.server.web import context
from kernel.server.web.access import role
from kernel.server.web.params import int_arg, str_arg

bp = Blueprint("audit", __name__, url_prefix="/api/v1/audit")


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

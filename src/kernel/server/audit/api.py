"""The audit log over the API (/api/v1/audit, admin only)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify
from sqlalchemy import select

from kernel.server.audit.schemas import AuditList, AuditListAnswer
from kernel.server.models.audit import AuditEntry
from kernel.server.web import context
from kernel.server.web.access import role
from kernel.server.web.endpoint import endpoint

bp = Blueprint("audit", __name__, url_prefix="/api/v1/audit")


@bp.get("")
@role("admin")
@endpoint("the audit log, newest first (admin)", query=AuditList, answers={200: AuditListAnswer})
def list_entries(query: AuditList) -> Response:
    """``?before=<id>`` pages back, ``?action=`` and ``?actor=`` filter."""
    q = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(query.limit)
    if query.before:
        q = q.where(AuditEntry.id < query.before)
    if query.action:
        q = q.where(AuditEntry.action == query.action)
    if query.actor:
        q = q.where(AuditEntry.actor == query.actor)
    rows = context.session().scalars(q).all()
    return jsonify({"entries": [r.to_json() for r in rows]})

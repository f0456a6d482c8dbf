"""Recording the current request in the audit log: views describe it with `note`, and one
hook writes the line after the answer (so no view can forget), or the view adds it to its own
transaction with `write_with`."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, g, request
from sqlalchemy.orm import Session

from kernel.server.audit.log import write
from kernel.server.core.db import out_of_space
from kernel.server.web import context
from kernel.server.web.access import MUTATING, actor, source_address

log = logging.getLogger(__name__)


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


def refused(status: int, message: str) -> None:
    """The request was refused though its answer is a page (status 200): the audit line says
    so, as it would for an error answer."""
    g.audit_result = f"{status} {message}"


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
    if g.get("audit_result"):  # a page that shows a refusal with a 200 (the login form)
        result = str(g.audit_result)
    elif resp.status_code < 400:
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
    except Exception as e:  # an audit failure must be loud in the log but not hide the answer
        if out_of_space(e):  # one line per request while the disk is full, not a traceback
            log.error("could not write the audit line of %s: the disk is full", request.path)
        else:
            log.exception("could not write the audit log")
    return resp


def init_app(app: Flask) -> None:
    app.after_request(_after)

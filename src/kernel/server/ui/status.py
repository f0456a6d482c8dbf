"""Status actions of the console: probe now (all servers, or one)."""

from __future__ import annotations

from flask import Response
from flask_babel import gettext as _

from kernel.server.inventory.servers import get_server
from kernel.server.ui.web import bp, toast
from kernel.server.web import audit, context
from kernel.server.web.access import role


@bp.post("/status/refresh")
@role("operator")
def refresh_all() -> Response:
    audit.note("status.refresh", target="status", hosts=["*"])
    context.poller().refresh(None)
    return toast(_("Probing every server now."))


@bp.post("/servers/<int:server_id>/status/refresh")
@role("operator")
def refresh_one(server_id: int) -> Response:
    srv = get_server(context.session(), server_id)
    audit.note("status.refresh", target=f"server {srv.name}", hosts=[srv.name])
    context.components().probe_now([srv.id])
    return toast(_("Probing %(name)s now.", name=srv.name))

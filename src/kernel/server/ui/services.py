"""Services: the catalogue with descriptions and problems, the matrix of services by servers,
operations on many servers at once, and "refresh services". Operations are the API's own
(services/api.py `start_operation`)."""

from __future__ import annotations

from flask import Response
from flask.typing import ResponseReturnValue

from kernel.exceptions import InvalidInput
from kernel.server.services.api import rescan, start_operation
from kernel.server.services.operations import OPERATIONS
from kernel.server.services.schemas import Operate
from kernel.server.status.queries import fleet
from kernel.server.ui import fleetview
from kernel.server.ui.web import (
    bp,
    form_list,
    form_model,
    form_text,
    redirect_to,
    refresh_page,
    render,
)
from kernel.server.web import context
from kernel.server.web.access import role


def operate(name: str, op: str, servers: list[str]) -> ResponseReturnValue:
    if not servers:
        raise InvalidInput("select at least one server")
    body = form_model(Operate, {"targets": {"servers": servers}})
    job, _skipped = start_operation(name, op, body)
    if form_text("inline", 4):  # a server page's buttons: the job's live panes, in place
        from kernel.server.ui.servers import live_job

        return live_job(job.id)
    return redirect_to(f"/jobs/{job.id}")


@bp.post("/services/deploy")
@role("operator")
def deploy_selected() -> ResponseReturnValue:
    """The dashboard's "deploy on selected": the service chosen in the form."""
    return operate(form_text("service", 100), "deploy", form_list("servers"))


@bp.post("/services/<name>/op/<op>")
@role("operator")
def operation(name: str, op: str) -> ResponseReturnValue:
    return operate(name, op, form_list("servers"))


@bp.post("/services/many")
@role("operator")
def operate_many() -> ResponseReturnValue:
    """The services page: one operation of one service on the servers ticked."""
    return operate(form_text("service", 100), form_text("op", 20), form_list("servers"))


@bp.get("/services")
@role("viewer")
def catalogue_page() -> str:
    cache = context.catalogue()
    cat = cache.get()
    units = {svc.name: svc.unit for svc in cat if svc.unit}
    rows = fleetview.hosts(fleet(context.session()), units)
    joined = [h for h in rows if h["state"] != "pending"]
    return render(
        "services.html",
        active="services",
        services=list(cat),
        problems=list(cat.problems),
        hosts=joined,
        scanned_at=cache.scanned_at,
        ops=OPERATIONS,
    )


@bp.post("/services/refresh")
@role("operator")
def refresh() -> Response:
    """ "Refresh services": rescan the folder, then show the page again."""
    rescan()
    return refresh_page()

"""Services: the catalogue with descriptions and problems, the matrix of services by servers,
operations on many servers at once, and "refresh services". Operations are the API's own
(services/api.py `start_operation`)."""

from __future__ import annotations

from flask.typing import ResponseReturnValue

from kernel.exceptions import InvalidInput
from kernel.server.services.api import start_operation
from kernel.server.services.schemas import Operate
from kernel.server.ui.web import bp, form_list, form_model, form_text, redirect_to
from kernel.server.web.access import role


def operate(name: str, op: str, servers: list[str]) -> ResponseReturnValue:
    if not servers:
        raise InvalidInput("select at least one server")
    body = form_model(Operate, {"targets": {"servers": servers}})
    job, _skipped = start_operation(name, op, body)
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

"""Jobs: the history with filters, a job's page (a pane per host, live from the job's event
stream, static/js/job.js; identical output folded), and the actions — run a command, cancel,
rerun the failed runs, download a run's output. Actions go through the API's own functions
(jobs/api.py)."""

from __future__ import annotations

from flask.typing import ResponseReturnValue

from kernel.exceptions import InvalidInput
from kernel.server.jobs.api import cancel_by_id, rerun_failed, start_command
from kernel.server.jobs.schemas import JobCreate
from kernel.server.ui.web import bp, form_list, form_model, form_text, redirect_to
from kernel.server.web.access import role


def _timeout() -> float:
    raw = form_text("timeout", 40).strip()
    if not raw:
        return 600.0
    try:
        return float(raw)
    except ValueError:
        raise InvalidInput("the timeout must be a number of seconds") from None


@bp.post("/jobs/new")
@role("operator")
def run_command() -> ResponseReturnValue:
    """Run a command on the servers chosen (checkboxes or a list of names), then its page."""
    servers = form_list("servers")
    if not servers:
        raise InvalidInput("select at least one server")
    body = form_model(
        JobCreate,
        {"cmd": form_text("cmd", 70000), "timeout": _timeout(), "targets": {"servers": servers}},
    )
    job, _skipped = start_command(body)
    return redirect_to(f"/jobs/{job.id}")


@bp.post("/jobs/<int:job_id>/cancel")
@role("operator")
def cancel(job_id: int) -> ResponseReturnValue:
    cancel_by_id(job_id)
    return redirect_to(f"/jobs/{job_id}")


@bp.post("/jobs/<int:job_id>/rerun")
@role("operator")
def rerun(job_id: int) -> ResponseReturnValue:
    new = rerun_failed(job_id)
    return redirect_to(f"/jobs/{new.id}")

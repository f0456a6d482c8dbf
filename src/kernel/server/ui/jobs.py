"""Jobs: the history with filters, a job's page (a pane per host, live from the job's event
stream, static/js/job.js; identical output folded), and the actions — run a command, cancel,
rerun the failed runs, download a run's output. Actions go through the API's own functions
(jobs/api.py)."""

from __future__ import annotations

from flask import request
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from sqlalchemy import func, select

from kernel.exceptions import InvalidInput, NotFound
from kernel.server.jobs.api import cancel_by_id, rerun_failed, start_command
from kernel.server.jobs.schemas import JobCreate
from kernel.server.jobs.states import JOB_STATES, needs_rerun, summary
from kernel.server.models.jobs import Job, Run
from kernel.server.ui import fold
from kernel.server.ui.fold import tail_lines
from kernel.server.ui.web import bp, form_list, form_model, form_text, redirect_to, render, toast
from kernel.server.web import context
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
    """The panes showing the job follow its end live (their event stream)."""
    cancel_by_id(job_id)
    return toast(_("Cancelling job #%(id)s.", id=job_id))


@bp.post("/jobs/<int:job_id>/rerun")
@role("operator")
def rerun(job_id: int) -> ResponseReturnValue:
    new = rerun_failed(job_id)
    return redirect_to(f"/jobs/{new.id}")


# -- pages --------------------------------------------------------------------------------------
PAGE_SIZE = 50
PANE_LINES = 400  # lines a pane keeps in the page; the rest is a download
FOLD_LINES = 200


@bp.get("/jobs")
@role("viewer")
def history() -> str:
    state = request.args.get("state", "")
    kind = request.args.get("kind", "")
    server = request.args.get("server", "")[:64]
    text = request.args.get("q", "")[:200].strip()
    before = request.args.get("before", type=int)
    q = select(Job).order_by(Job.id.desc()).limit(PAGE_SIZE + 1)
    if state in JOB_STATES:
        q = q.where(Job.state == state)
    if kind in ("command", "service", "init"):
        q = q.where(Job.kind == kind)
    if server:
        q = q.where(Job.id.in_(select(Run.job_id).where(Run.server_name == server)))
    if text:
        like = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        q = q.where(Job.title.like(like, escape="\\") | Job.cmd.like(like, escape="\\"))
    if before and 0 < before < 2**31:
        q = q.where(Job.id < before)
    jobs = list(context.session().scalars(q))
    more = len(jobs) > PAGE_SIZE
    jobs = jobs[:PAGE_SIZE]
    summaries = _summaries([j.id for j in jobs])
    return render(
        "jobs.html",
        active="jobs",
        jobs=jobs,
        summaries=summaries,
        more=more,
        filters={"state": state, "kind": kind, "server": server, "q": text},
        job_states=JOB_STATES,
    )


def _summaries(ids: list[int]) -> dict[int, dict[str, int]]:
    if not ids:
        return {}
    rows = context.session().execute(
        select(Run.job_id, Run.state, func.count()).where(Run.job_id.in_(ids))
        .group_by(Run.job_id, Run.state)
    ).all()  # fmt: skip
    out: dict[int, dict[str, int]] = {}
    for job_id, st, n in rows:
        out.setdefault(job_id, {})[st] = n
    return out


def _job(job_id: int) -> Job:
    job = context.session().get(Job, job_id)
    if job is None:
        raise NotFound(f"no job {job_id}")
    return job


@bp.get("/jobs/<int:job_id>")
@role("viewer")
def job_page(job_id: int) -> str:
    job = _job(job_id)
    runs = sorted(job.runs, key=lambda r: r.server_name)
    ended = job.state in ("finished", "cancelled")
    tails, cut = {}, set()
    if ended:
        for run in runs:
            text, dropped = tail_lines(run.stdout + run.stderr, PANE_LINES)
            tails[run.id] = text
            if dropped:
                cut.add(run.id)
    counts = summary(r.state for r in runs)
    return render(
        "job.html",
        active="jobs",
        job=job,
        runs=runs,
        ended=ended,
        tails=tails,
        cut=cut,
        max_lines=PANE_LINES,
        fold_lines=FOLD_LINES,
        counts={k: v for k, v in counts.items() if v},
        groups=_groups(runs) if ended else None,
        can_rerun=ended and job.kind == "command" and any(needs_rerun(r.state) for r in runs),
    )


def _groups(runs: list[Run]) -> list[fold.Group]:
    return fold.fold(
        (fold.RunOutput(r.server_name, r.state, r.exit_code, r.stdout, r.stderr) for r in runs),
        FOLD_LINES,
    )

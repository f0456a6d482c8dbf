"""A server's page (facts, charts, services with their actions, init scripts, a command box
with live output, edit, remove) and adding a server (the one-liner, then the host followed
until it has joined and its init scripts have run; or by URL + key). Every change goes through
the inventory API's own functions (inventory/api.py)."""

from __future__ import annotations

from typing import Any

from flask import current_app
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from sqlalchemy import select

from kernel.exceptions import InvalidInput
from kernel.server.inventory import initflow
from kernel.server.inventory.api import (
    create_server,
    edit_server,
    remove_server,
    renew_enroll_token,
    start_init,
)
from kernel.server.inventory.schemas import InitRun, ServerCreate, ServerEdit
from kernel.server.inventory.servers import get_server
from kernel.server.jobs.api import start_command
from kernel.server.jobs.schemas import JobCreate
from kernel.server.models.jobs import Job
from kernel.server.models.status import HostStatus
from kernel.server.status.brief import brief
from kernel.server.ui.dashboard import catalogue_units
from kernel.server.ui.fleetview import address
from kernel.server.ui.web import bp, form_list, form_model, form_text, redirect_to, render
from kernel.server.web import context
from kernel.server.web.access import role

RANGES = {"1h": 3600, "24h": 86400, "7d": 7 * 86400}


def _services(st: HostStatus | None) -> list[dict[str, Any]]:
    units = (st.units or {}) if st is not None else {}
    out = []
    for svc in context.catalogue().get():
        raw = units.get(svc.unit) if svc.unit else None
        word = brief(0, "", "online", "online", {svc.unit: raw} if svc.unit else {}, None)
        out.append(
            {
                "name": svc.name,
                "title": svc.title,
                "description": svc.description,
                "unit": svc.unit,
                "word": word["units"].get(svc.unit, "missing") if svc.unit else "missing",
                "enabled": (raw or {}).get("unit_file_state") if isinstance(raw, dict) else None,
                "sub": (raw or {}).get("sub_state") if isinstance(raw, dict) else None,
                "deployable": svc.deployable,
                "problems": list(svc.problems),
            }
        )
    return out


def _recent_jobs(server_name: str, limit: int = 10) -> list[Job]:
    from kernel.server.models.jobs import Run

    q = (
        select(Job)
        .join(Run, Run.job_id == Job.id)
        .where(Run.server_name == server_name)
        .order_by(Job.id.desc())
        .limit(limit)
    )
    return list(context.session().scalars(q).unique())


@bp.get("/servers/<int:server_id>")
@role("viewer")
def server_page(server_id: int) -> str:
    s = context.session()
    srv = get_server(s, server_id)
    st = s.get(HostStatus, srv.id)
    watched = sorted(set(catalogue_units().values()))
    health = st.state if st else "unknown"
    b = brief(srv.id, srv.name, srv.state, health, st.units if st else None,
              st.metrics if st else None, watched)  # fmt: skip
    return render(
        "server.html",
        active="dashboard",
        srv=srv,
        st=st,
        host=b,
        address=address(srv.agent_url),
        services=_services(st),
        deployable=[svc.name for svc in context.catalogue().get() if svc.deployable],
        init=initflow.status(s, srv, current_app.config) if srv.agent_url else [],
        jobs=_recent_jobs(srv.name),
        ranges=RANGES,
    )


# -- actions ------------------------------------------------------------------------------------
@bp.post("/servers/<int:server_id>/run")
@role("operator")
def run_here(server_id: int) -> str:
    """The command box: run on this server; the answer is a live pane for the new job."""
    srv = get_server(context.session(), server_id)
    body = form_model(
        JobCreate, {"cmd": form_text("cmd", 70000), "targets": {"servers": [srv.name]}}
    )
    job, _skipped = start_command(body)
    return live_job(job.id)


def live_job(job_id: int) -> str:
    """A job's panes, to swap into a page: static/js/job.js follows it live."""
    job = context.session().get(Job, job_id)
    assert job is not None
    return render("_job_live.html", job=job, runs=sorted(job.runs, key=lambda r: r.server_name))


@bp.post("/servers/<int:server_id>/init")
@role("operator")
def run_init(server_id: int) -> str:
    script = form_text("script", 255) or None
    job = start_init(server_id, form_model(InitRun, {"script": script}))
    return live_job(job.id)


def _edit_fields() -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": form_text("name", 200).strip(),
        "description": form_text("description", 10000),
        "tags": form_list("tags"),
    }
    url = form_text("agent_url", 300).strip()
    key = form_text("agent_key", 200).strip()
    if url:
        data["agent_url"] = url
    if key:
        data["agent_key"] = key
    return data


@bp.post("/servers/<int:server_id>/edit")
@role("admin")
def edit(server_id: int) -> ResponseReturnValue:
    srv = edit_server(server_id, form_model(ServerEdit, _edit_fields()))
    context.components().probe_now([srv.id])
    return redirect_to(f"/servers/{srv.id}")


@bp.post("/servers/<int:server_id>/remove")
@role("admin")
def remove(server_id: int) -> ResponseReturnValue:
    srv = get_server(context.session(), server_id)
    if form_text("confirm_name", 200) != srv.name:
        raise InvalidInput(_("Type the server's name to remove it."))
    remove_server(server_id)
    return redirect_to("/")


# -- adding a server -----------------------------------------------------------------------------
@bp.get("/servers/new")
@role("admin")
def new_server() -> str:
    return render("server_new.html", active="dashboard")


@bp.post("/servers/new")
@role("admin")
def add() -> ResponseReturnValue:
    srv, _enroll = create_server(form_model(ServerCreate, _edit_fields()))
    if _enroll is not None:
        # The one-liner is shown once, on the join page; a new one can be made there.
        return render_join(srv.id, _enroll)
    return redirect_to(f"/servers/{srv.id}/join")


@bp.post("/servers/<int:server_id>/enroll-token")
@role("admin")
def new_token(server_id: int) -> str:
    _srv, enroll = renew_enroll_token(server_id)
    return render_join(server_id, enroll)


@bp.get("/servers/<int:server_id>/join")
@role("viewer")
def join_page(server_id: int) -> str:
    return render_join(server_id, None)


def render_join(server_id: int, enroll: dict[str, Any] | None) -> str:
    srv = get_server(context.session(), server_id)
    return render("server_join.html", active="dashboard", srv=srv, enroll=enroll, **_progress(srv))


@bp.get("/servers/<int:server_id>/join/progress")
@role("viewer")
def join_progress(server_id: int) -> str:
    """Polled by the join page until the server has joined and its init scripts have run."""
    srv = get_server(context.session(), server_id)
    return render("_join_progress.html", srv=srv, **_progress(srv))


def _progress(srv: Any) -> dict[str, Any]:
    s = context.session()
    scripts = initflow.status(s, srv, current_app.config) if srv.agent_url else []
    outputs = {}
    for entry in scripts:
        job = s.get(Job, entry["job_id"]) if entry.get("job_id") else None
        if job is not None and job.runs:
            run = job.runs[0]
            outputs[entry["script"]] = (run.stdout + run.stderr)[-4000:]
    busy = any(e["state"] in ("queued", "running") for e in scripts)
    done = bool(srv.agent_url) and not busy
    return {"scripts": scripts, "outputs": outputs, "done": done, "busy": busy}

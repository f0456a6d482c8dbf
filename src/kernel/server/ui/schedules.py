"""Schedules: the list (next firing, last result), a schedule's page (its next planned times,
its latest firings with their jobs, run now, enable / disable, edit, delete), and the form to
create or edit one with a live preview of the next times. Changes go through the schedules
API's own functions (schedules/api.py), previews through schedules/service.py."""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import request
from flask.typing import ResponseReturnValue

from kernel.exceptions import InvalidInput, KernelError, NotFound
from kernel.server.core.db import utcnow
from kernel.server.jobs.service import live_servers
from kernel.server.models.schedules import MISSED_POLICIES, Schedule
from kernel.server.schedules import cron, service
from kernel.server.schedules.api import (
    create_schedule,
    delete_schedule,
    edit_schedule,
    fire_now,
)
from kernel.server.schedules.schemas import ScheduleCreate, ScheduleEdit
from kernel.server.ui.web import bp, form_list, form_model, form_text, redirect_to, render
from kernel.server.web import context
from kernel.server.web.access import role

SCRIPT_CMD = "bash -s"  # a script runs as the standard input of this command
# Offered in the time-zone box (any IANA name is taken).
COMMON_ZONES = (
    "UTC", "Asia/Shanghai", "Asia/Hong_Kong", "Asia/Singapore", "Asia/Tokyo", "Europe/London",
    "Europe/Berlin", "Europe/Paris", "America/New_York", "America/Chicago",
    "America/Los_Angeles", "Australia/Sydney",
)  # fmt: skip


def _get(schedule_id: int) -> Schedule:
    sched = context.session().get(Schedule, schedule_id)
    if sched is None:
        raise NotFound(f"no schedule {schedule_id}")
    return sched


def _number(name: str, default: float) -> float:
    raw = form_text(name, 40).strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise InvalidInput(f"'{name}' must be a number of seconds") from None


def _targets() -> dict[str, Any]:
    kind = form_text("target_kind", 10)
    if kind == "all":
        return {"all": True}
    if kind == "tags":
        return {"tags": form_list("tags")}
    return {"servers": form_list("servers")}


def _fields() -> dict[str, Any]:
    """The form as the API's body: a command, or a script (run by ``bash -s``)."""
    script = form_text("mode", 10) == "script"
    fields: dict[str, Any] = {
        "name": form_text("name", 200).strip(),
        "description": form_text("description", 4000),
        "targets": _targets(),
        "cron": form_text("cron", 1000).strip(),
        "timezone": form_text("timezone", 200).strip(),
        "timeout": _number("timeout", 600.0),
        "skip_if_running": bool(form_text("skip_if_running", 5)),
        "missed": form_text("missed", 20) or "skip",
        "enabled": bool(form_text("enabled", 5)),
    }
    if script:
        fields["cmd"] = SCRIPT_CMD
        fields["stdin"] = form_text("script", 1_100_000).replace("\r\n", "\n")
        if not fields["stdin"].strip():
            raise InvalidInput("write the script, or choose 'command'")
    else:
        fields["cmd"] = form_text("cmd", 70000)
    return fields


def _form_page(sched: Schedule | None) -> str:
    s = context.session()
    values: dict[str, Any]
    if sched is None:
        values = {
            "name": "", "description": "", "mode": "command", "cmd": "", "script": "",
            "target_kind": "servers", "servers": [], "tags": [], "cron": "0 3 * * *",
            "timezone": "UTC", "timeout": 600, "skip_if_running": False, "missed": "skip",
            "enabled": True,
        }  # fmt: skip
    else:
        t = sched.targets or {}
        script = sched.stdin is not None and sched.cmd == SCRIPT_CMD
        values = {
            "name": sched.name, "description": sched.description,
            "mode": "script" if script else "command",
            "cmd": "" if script else sched.cmd, "script": sched.stdin or "",
            "target_kind": "all" if t.get("all") else "tags" if t.get("tags") else "servers",
            "servers": list(t.get("servers") or []), "tags": list(t.get("tags") or []),
            "cron": sched.cron, "timezone": sched.timezone, "timeout": sched.timeout,
            "skip_if_running": sched.skip_if_running, "missed": sched.missed,
            "enabled": sched.enabled,
        }  # fmt: skip
    return render(
        "schedule_form.html",
        active="schedules",
        sched=sched,
        v=values,
        servers=[srv.name for srv in live_servers(s)],
        zones=COMMON_ZONES,
        missed_policies=MISSED_POLICIES,
    )


# -- pages --------------------------------------------------------------------------------------
@bp.get("/schedules")
@role("viewer")
def schedules_page() -> str:
    shown = service.list_json(context.session())
    return render("schedules.html", active="schedules", schedules=shown)


@bp.get("/schedules/new")
@role("operator")
def new_schedule() -> str:
    return _form_page(None)


@bp.get("/schedules/<int:schedule_id>")
@role("viewer")
def schedule_page(schedule_id: int) -> str:
    s = context.session()
    sched = _get(schedule_id)
    shown = service.one_json(s, sched)
    local: list[str] = []
    try:
        zone = cron.parse_zone(sched.timezone)
        local = [_local(t, zone) for t in shown["next_firings"]]
    except InvalidInput:
        pass
    return render("schedule.html", active="schedules", sc=shown, local=local)


@bp.get("/schedules/<int:schedule_id>/edit")
@role("operator")
def edit_schedule_page(schedule_id: int) -> str:
    return _form_page(_get(schedule_id))


@bp.get("/schedules/preview")
@role("viewer")
def schedule_preview() -> str:
    """The form's live preview (htmx): the next times, or what is wrong, as a fragment."""
    expression = request.args.get("cron", "")[:1000]
    zone = request.args.get("timezone", "")[:200].strip()
    try:
        shown = service.preview(expression, zone, now=utcnow(), count=5)
    except KernelError as e:
        return render("_cron_preview.html", error=e.message, shown=None)
    return render("_cron_preview.html", error=None, shown=shown)


def _local(iso_utc: str, zone: Any) -> str:
    t = dt.datetime.fromisoformat(iso_utc.replace("Z", "+00:00"))
    return t.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z")


# -- actions ------------------------------------------------------------------------------------
@bp.post("/schedules/new")
@role("operator")
def add_schedule() -> ResponseReturnValue:
    sched = create_schedule(form_model(ScheduleCreate, _fields()))
    return redirect_to(f"/schedules/{sched.id}")


@bp.post("/schedules/<int:schedule_id>/edit")
@role("operator")
def save_schedule(schedule_id: int) -> ResponseReturnValue:
    fields = _fields()
    fields.setdefault("stdin", "")  # a command: the script, if there was one, goes
    edit_schedule(schedule_id, form_model(ScheduleEdit, fields))
    return redirect_to(f"/schedules/{schedule_id}")


@bp.post("/schedules/<int:schedule_id>/enable")
@role("operator")
def enable_schedule(schedule_id: int) -> ResponseReturnValue:
    edit_schedule(schedule_id, form_model(ScheduleEdit, {"enabled": True}))
    return redirect_to(f"/schedules/{schedule_id}")


@bp.post("/schedules/<int:schedule_id>/disable")
@role("operator")
def disable_schedule(schedule_id: int) -> ResponseReturnValue:
    edit_schedule(schedule_id, form_model(ScheduleEdit, {"enabled": False}))
    return redirect_to(f"/schedules/{schedule_id}")


@bp.post("/schedules/<int:schedule_id>/run")
@role("operator")
def run_schedule(schedule_id: int) -> ResponseReturnValue:
    settled = fire_now(schedule_id)
    assert settled.job is not None
    return redirect_to(f"/jobs/{settled.job.id}")


@bp.post("/schedules/<int:schedule_id>/delete")
@role("operator")
def remove_schedule(schedule_id: int) -> ResponseReturnValue:
    delete_schedule(schedule_id)
    return redirect_to("/schedules")

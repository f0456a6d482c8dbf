"""The routes of schedules (/api/v1/schedules): create, list, show, edit, delete, run now,
their firings, and a preview of a cron expression's next times. Each firing is a job of
kind ``schedule`` (firing.py says how a firing is claimed exactly once)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify
from sqlalchemy.exc import IntegrityError

from kernel.exceptions import Conflict, NotFound
from kernel.server.core.db import utcnow
from kernel.server.jobs.shapes import job_json
from kernel.server.models.schedules import Schedule
from kernel.server.schedules import firing, service
from kernel.server.schedules.schemas import (
    FiringList,
    FiringListAnswer,
    Preview,
    PreviewAnswer,
    RunNowAnswer,
    ScheduleAnswer,
    ScheduleCreate,
    ScheduleEdit,
    ScheduleListAnswer,
)
from kernel.server.web import audit, context
from kernel.server.web.access import actor, role
from kernel.server.web.endpoint import endpoint

bp = Blueprint("schedules", __name__, url_prefix="/api/v1/schedules")


def _get(schedule_id: int) -> Schedule:
    sched = context.session().get(Schedule, schedule_id)
    if sched is None:
        raise NotFound(f"no schedule {schedule_id}")
    return sched


def _commit() -> None:
    try:
        context.session().commit()
    except IntegrityError:  # a schedule of that name was made meanwhile
        context.session().rollback()
        raise Conflict("a schedule with that name exists") from None
    context.components().scheduler.wake()


@bp.get("")
@role("viewer")
@endpoint("schedules, each with its next planned times and its latest firing",
          answers={200: ScheduleListAnswer})  # fmt: skip
def list_schedules() -> Response:
    s = context.session()
    return jsonify({"schedules": service.list_json(s), "now": _now_iso()})


@bp.post("")
@role("operator")
@endpoint("create a schedule (cron expression in a named time zone)", body=ScheduleCreate,
          answers={201: ScheduleAnswer})  # fmt: skip
def create(body: ScheduleCreate) -> tuple[Response, int]:
    s = context.session()
    fields = body.model_dump()
    fields["targets"] = body.targets.spec()
    audit.note("schedule.create", target=f"schedule {body.name}", cron=body.cron,
               timezone=body.timezone, cmd=body.cmd[:1000], targets=fields["targets"])  # fmt: skip
    sched = service.create(s, fields, created_by=actor(), now=utcnow())
    audit.note(schedule_id=sched.id)
    _commit()
    return jsonify(service.one_json(s, sched)), 201


@bp.get("/preview")
@role("viewer")
@endpoint("the next planned times of a cron expression in a time zone (nothing is saved)",
          query=Preview, answers={200: PreviewAnswer})  # fmt: skip
def preview(query: Preview) -> Response:
    return jsonify(service.preview(query.cron, query.timezone, now=utcnow(), count=query.count))


@bp.get("/<int:schedule_id>")
@role("viewer")
@endpoint("one schedule with its script and its latest firings", answers={200: ScheduleAnswer})
def get_schedule(schedule_id: int) -> Response:
    return jsonify(service.one_json(context.session(), _get(schedule_id)))


@bp.patch("/<int:schedule_id>")
@role("operator")
@endpoint("change a schedule (a new cron, zone or enabling plans from now on)",
          body=ScheduleEdit, answers={200: ScheduleAnswer})  # fmt: skip
def edit(schedule_id: int, body: ScheduleEdit) -> Response:
    s = context.session()
    sched = _get(schedule_id)
    changes: dict[str, Any] = {
        k: v for k, v in body.model_dump(exclude_none=True).items() if k != "targets"
    }
    if body.targets is not None:
        changes["targets"] = body.targets.spec()
    audit.note("schedule.edit", target=f"schedule {sched.name}", schedule_id=sched.id)
    changed = service.edit(s, sched, changes, now=utcnow())
    audit.note(changed=changed)
    _commit()
    return jsonify(service.one_json(s, sched))


@bp.delete("/<int:schedule_id>")
@role("operator")
@endpoint("delete a schedule and its firings (its jobs stay)", answers={200: ScheduleAnswer})
def delete(schedule_id: int) -> Response:
    s = context.session()
    sched = _get(schedule_id)
    shown = service.schedule_json(sched, None)
    audit.note("schedule.delete", target=f"schedule {sched.name}", schedule_id=sched.id)
    s.delete(sched)
    _commit()
    return jsonify(shown)


@bp.post("/<int:schedule_id>/run")
@role("operator")
@endpoint("fire a schedule now, by hand (its planned times stay as they are)",
          answers={201: RunNowAnswer})  # fmt: skip
def run_now(schedule_id: int) -> tuple[Response, int]:
    sched = _get(schedule_id)
    name = sched.name
    context.close_session()  # firing takes its own transaction (and the schedule's lock)
    audit.note("schedule.run", target=f"schedule {name}", schedule_id=schedule_id)
    parts = context.components()
    who = actor()
    settled = firing.run_now(parts.db, parts.runner, schedule_id, now=utcnow(), by=who)
    assert settled.job is not None
    audit.note(job=settled.job.id, hosts=[r.server_name for r in settled.job.runs])
    with parts.db.reading() as s:
        shown = service.firings_json(s, settled.firings)[0]
    return jsonify({"firing": shown, "job": job_json(settled.job, settled.job.runs)}), 201


@bp.get("/<int:schedule_id>/firings")
@role("viewer")
@endpoint("a schedule's firings, newest first (``?before=<id>`` pages back)", query=FiringList,
          answers={200: FiringListAnswer})  # fmt: skip
def firings(schedule_id: int, query: FiringList) -> Response:
    s = context.session()
    _get(schedule_id)
    found = service.firings_of(s, schedule_id, limit=query.limit, before=query.before)
    return jsonify({"firings": service.firings_json(s, found)})


def _now_iso() -> str:
    return utcnow().isoformat().replace("+00:00", "Z")

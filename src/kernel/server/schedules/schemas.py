"""What the schedules API takes and answers (core/inputs.py explains the declarations)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from kernel.server.core.inputs import (
    WEEK,
    Answer,
    Body,
    EnvName,
    Name,
    NoNul,
    NotBlank,
    Query,
    one_of,
)
from kernel.server.jobs.schemas import MAX_CMD, MAX_STDIN, EnvValue, Targets
from kernel.server.models.schedules import FIRING_STATES, MISSED_POLICIES
from kernel.server.schedules.cron import MAX_EXPRESSION

Missed = Annotated[str, *one_of(MISSED_POLICIES)]
FiringState = Annotated[str, *one_of(FIRING_STATES)]
Cmd = Annotated[str, Field(min_length=1, max_length=MAX_CMD), NoNul, NotBlank]
Stdin = Annotated[str, Field(max_length=MAX_STDIN), NoNul]
Env = Annotated[dict[EnvName, EnvValue], Field(max_length=256)]
Cwd = Annotated[str, Field(max_length=1024), NoNul]
Timeout = Annotated[float, Field(ge=0.1, le=WEEK, allow_inf_nan=False)]
Description = Annotated[str, Field(max_length=2000), NoNul]
CronText = Annotated[str, Field(min_length=1, max_length=MAX_EXPRESSION), NoNul]
Zone = Annotated[str, Field(min_length=1, max_length=64), NoNul]


class ScheduleCreate(Body):
    name: Name
    description: Description = ""
    cmd: Cmd
    stdin: Stdin | None = None  # a script for `cmd: "bash -s"`
    env: Env = {}
    cwd: Cwd | None = None
    timeout: Timeout = 600.0
    targets: Targets
    cron: CronText
    timezone: Zone
    enabled: bool = True
    skip_if_running: bool = False
    missed: Missed = "skip"


class ScheduleEdit(Body):
    """Fields to change (null or left out: unchanged; ``stdin: ""`` removes the script)."""

    name: Name | None = None
    description: Description | None = None
    cmd: Cmd | None = None
    stdin: Stdin | None = None
    env: Env | None = None
    cwd: Cwd | None = None
    timeout: Timeout | None = None
    targets: Targets | None = None
    cron: CronText | None = None
    timezone: Zone | None = None
    enabled: bool | None = None
    skip_if_running: bool | None = None
    missed: Missed | None = None


class FiringList(Query):
    limit: Annotated[int, Field(ge=1, le=500)] = 50
    before: Annotated[int, Field(ge=1, le=2**62)] | None = None


class Preview(Query):
    cron: CronText
    timezone: Zone
    count: Annotated[int, Field(ge=1, le=100)] = 5


# -- answers ------------------------------------------------------------------------------------
class FiringAnswer(Answer):
    id: int
    schedule_id: int
    planned_at: str | None
    state: FiringState
    job_id: int | None
    job_state: str | None
    summary: dict[str, int] | None
    note: str | None
    missed_count: int
    by: str
    created_at: str | None


class ScheduleAnswer(Answer):
    id: int
    name: str
    description: str
    cmd: str
    has_stdin: bool
    env: list[str]  # names only: values may be secrets
    cwd: str | None
    timeout: float
    targets: dict[str, Any]
    cron: str
    cron_text: str
    timezone: str
    enabled: bool
    skip_if_running: bool
    missed: Missed
    next_at: str | None
    next_firings: list[str]
    last_firing: FiringAnswer | None
    created_by: str
    created_at: str | None
    updated_at: str | None
    stdin: str | None = None  # one schedule: the script itself
    firings: list[FiringAnswer] | None = None  # one schedule: the latest firings


class ScheduleListAnswer(Answer):
    schedules: list[ScheduleAnswer]
    now: str


class FiringListAnswer(Answer):
    firings: list[FiringAnswer]


class RunNowAnswer(Answer):
    firing: FiringAnswer
    job: dict[str, Any]


class PreviewAnswer(Answer):
    cron: str
    cron_text: str
    timezone: str
    next_firings: list[str]
    next_firings_local: list[str]

"""What the jobs API takes and answers (core/inputs.py explains the declarations)."""

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
    Tags,
    one_of,
)
from kernel.server.jobs.states import JOB_STATES, RUN_STATES

MAX_CMD = 64 * 1024
MAX_STDIN = 8 * 1024 * 1024
MAX_LIST = 500

RunState = Annotated[str, *one_of(RUN_STATES)]
JobState = Annotated[str, *one_of(JOB_STATES)]


EnvValue = Annotated[str, Field(max_length=MAX_CMD), NoNul]


class Targets(Body):
    """Servers chosen by name, by tag, or all of them (any mix; at least one)."""

    servers: Annotated[list[Name], Field(max_length=10000)] = []
    tags: Tags = []
    all: bool = False

    def spec(self) -> dict[str, Any]:
        """As stored with the job (and as `service.resolve_targets` takes it)."""
        return {
            "servers": sorted(set(self.servers)),
            "tags": sorted(set(self.tags)),
            "all": self.all,
        }


class JobCreate(Body):
    cmd: Annotated[str, Field(min_length=1, max_length=MAX_CMD), NoNul, NotBlank]
    stdin: Annotated[str, Field(max_length=MAX_STDIN), NoNul] | None = None
    env: Annotated[dict[EnvName, EnvValue], Field(max_length=256)] = {}
    cwd: Annotated[str, Field(max_length=1024), NoNul] | None = None
    timeout: Annotated[float, Field(ge=0.1, le=WEEK, allow_inf_nan=False)] = 600.0
    title: Annotated[str, Field(max_length=255), NoNul] = ""
    targets: Targets


class JobList(Query):
    limit: Annotated[int, Field(ge=1, le=MAX_LIST)] = 50
    before: Annotated[int, Field(ge=1, le=2**62)] | None = None
    state: JobState | None = None


class JobShow(Query):
    output: bool = False


# -- answers ------------------------------------------------------------------------------------
class RunAnswer(Answer):
    id: str
    job_id: int
    server_id: int
    server: str
    state: RunState
    exit_code: int | None
    signal: int | None
    truncated: bool
    error: str | None
    sent_at: str | None
    started_at: str | None
    finished_at: str | None
    duration: float | None
    stdout: str | None = None  # with ?output=1 and for one run
    stderr: str | None = None


class JobAnswer(Answer):
    id: int
    kind: str
    title: str
    cmd: str
    has_stdin: bool
    env: list[str]  # names only: values may be secrets
    cwd: str | None
    timeout: float
    targets: dict[str, Any]
    meta: dict[str, Any]
    state: JobState
    cancel_requested: bool
    created_by: str
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    parent_id: int | None
    summary: dict[str, int] | None = None  # with runs
    runs: list[RunAnswer] | None = None
    skipped: list[str] | None = None  # on create: chosen servers not joined yet


class JobListAnswer(Answer):
    jobs: list[JobAnswer]

"""What the inventory and enrollment API takes and answers (core/inputs.py explains the
declarations)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from kernel.server.core.inputs import Answer, Body, Name, NoNul, Query, Tag, Tags, one_of
from kernel.server.core.paging import PAGE_MAX
from kernel.server.models.servers import SERVER_STATES

Description = Annotated[str, Field(max_length=4000), NoNul]
AgentUrl = Annotated[str, Field(max_length=255), NoNul]
AgentKey = Annotated[str, Field(max_length=200), NoNul]  # 64 hex, checked by check_key
Fingerprint = Annotated[str, Field(max_length=200), NoNul]
ServerState = Annotated[str, *one_of(SERVER_STATES)]


class ServerCreate(Body):
    """With agent_url + agent_key: joins now (checked first). Without: pending, with a
    one-time install command."""

    name: Name
    description: Description = ""
    tags: Tags = []
    agent_url: AgentUrl | None = None
    agent_key: AgentKey | None = None
    tls_fingerprint: Fingerprint | None = None


class ServerEdit(Body):
    """Only the fields given change."""

    name: Name | None = None
    description: Description | None = None
    tags: Tags | None = None
    agent_url: AgentUrl | None = None
    agent_key: AgentKey | None = None
    tls_fingerprint: Fingerprint | None = None


class ServerList(Query):
    """``?after=`` is the ``next`` of the page before (pages follow the names' order)."""

    tag: Tag | None = None
    removed: bool = False  # also removed servers (history)
    state: ServerState | None = None
    q: Annotated[str, Field(max_length=64), NoNul] | None = None  # in the name, any case
    limit: Annotated[int, Field(ge=1, le=PAGE_MAX)] = PAGE_MAX
    after: Annotated[str, Field(max_length=200), NoNul] | None = None


class InitRun(Body):
    script: Annotated[str, Field(max_length=255), NoNul] | None = None


class Enroll(Body):
    token: Annotated[str, Field(max_length=200), NoNul]
    port: Annotated[int, Field(ge=1, le=65535)] = 8001
    hostname: Annotated[str, Field(max_length=255), NoNul] | None = None
    server: Name | None = None  # the name the enrolling host expects to become


# -- answers ------------------------------------------------------------------------------------
class ServerAnswer(Answer):
    id: int
    name: str
    agent_url: str | None
    tls_fingerprint: str | None
    description: str
    tags: list[str]
    state: ServerState
    facts: dict[str, Any]
    last_seen: str | None
    last_error: str | None
    created_at: str | None
    removed_at: str | None


class EnrollAnswer(Answer):
    token: str
    expires_at: str
    command: str  # the one-line installer to run on the host


class ServerCreated(Answer):
    server: ServerAnswer
    enroll: EnrollAnswer | None = None


class ServerListAnswer(Answer):
    servers: list[ServerAnswer]
    total: int  # servers matching the filters, on every page
    next: str | None  # ``?after=`` for the next page; null on the last


class InitScriptState(Answer):
    script: str
    sha256: str
    state: str  # not_run, or a run state
    job_id: int | None = None
    exit_code: int | None = None
    created_at: str | None = None
    finished_at: str | None = None
    ran_sha256: str | None = None
    changed_since_run: bool | None = None


class InitStatusAnswer(Answer):
    server: str
    scripts: list[InitScriptState]


class InitStarted(Answer):
    job_id: int
    script: str | None


class Enrolled(Answer):
    server: str
    agent_url: str
    state: str
    init_job_id: int | None

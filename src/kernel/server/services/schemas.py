"""What the services API takes and answers (core/inputs.py explains the declarations)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from kernel.server.core.inputs import WEEK, Answer, Body
from kernel.server.core.shell import MAX_LOG_LINES
from kernel.server.jobs.schemas import JobAnswer, Targets


class Operate(Body):
    targets: Targets
    lines: Annotated[int, Field(ge=1, le=MAX_LOG_LINES)] | None = None  # logs only
    timeout: Annotated[float, Field(ge=1, le=WEEK, allow_inf_nan=False)] | None = None


class ServiceAnswer(Answer):
    name: str
    title: str
    display_name: str
    description: str
    unit: str | None
    deployable: bool
    problems: list[str]
    installed: list[str] | None = None  # host names
    active: list[str] | None = None
    failed: list[str] | None = None
    scripts: dict[str, str] | None = None  # detail: name → sha256
    artifacts: list[dict[str, Any]] | None = None


class HostUnit(Answer):
    server: str
    server_id: int
    health: str
    probed_at: str | None
    unit: dict[str, Any] | None


class ServiceDetailAnswer(ServiceAnswer):
    hosts: list[HostUnit]


class ServiceHostsAnswer(Answer):
    service: str
    unit: str | None
    installed: list[str]
    active: list[str]
    failed: list[str]
    hosts: list[HostUnit]


class CatalogueAnswer(Answer):
    services: list[ServiceAnswer]
    problems: list[str]
    scanned_at: float


class OperationAnswer(JobAnswer):
    pass

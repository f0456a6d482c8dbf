"""What the audit API takes and answers (core/inputs.py explains the declarations)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from kernel.server.core.inputs import Answer, NoNul, Query


class AuditList(Query):
    limit: Annotated[int, Field(ge=1, le=1000)] = 100
    before: Annotated[int, Field(ge=1, le=2**62)] | None = None
    action: Annotated[str, Field(max_length=255), NoNul] | None = None
    actor: Annotated[str, Field(max_length=255), NoNul] | None = None


class AuditEntryAnswer(Answer):
    id: int
    at: str | None
    actor: str
    source: str
    action: str
    target: str
    hosts: list[str]
    detail: dict[str, Any]
    result: str


class AuditListAnswer(Answer):
    entries: list[AuditEntryAnswer]

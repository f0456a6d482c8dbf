"""What the files API takes and answers (core/inputs.py explains the declarations)."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field, WithJsonSchema

from kernel.names import (
    MODE_PATTERN,
    MODE_RE,
    MODE_RULE,
    OWNER_PATTERN,
    OWNER_RE,
    OWNER_RULE,
    REMOTE_PATH_MAX,
    remote_path_problem,
)
from kernel.server.core.inputs import WEEK, Answer, Body, Name, NoNul, Query
from kernel.server.files.push import DEFAULT_TIMEOUT
from kernel.server.jobs.schemas import Targets


def _path(value: str) -> str:
    problem = remote_path_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


def _mode(value: str) -> str:
    if not MODE_RE.fullmatch(value):
        raise ValueError(MODE_RULE)
    return value.rjust(4, "0")


def _owner(value: str) -> str:
    if not OWNER_RE.fullmatch(value):
        raise ValueError(OWNER_RULE)
    return value


# The rules are kernel.names' (core/shell.py checks them again before quoting); the schema
# says the gist.
RemotePath = Annotated[
    str,
    Field(min_length=2, max_length=REMOTE_PATH_MAX),
    AfterValidator(_path),
    WithJsonSchema({"type": "string", "pattern": "^/", "maxLength": REMOTE_PATH_MAX}),
]
Mode = Annotated[
    str, AfterValidator(_mode), WithJsonSchema({"type": "string", "pattern": MODE_PATTERN})
]
Owner = Annotated[
    str, AfterValidator(_owner), WithJsonSchema({"type": "string", "pattern": OWNER_PATTERN})
]


class UploadQuery(Query):
    name: Annotated[str, Field(max_length=255), NoNul] = ""  # the file's name, for people


class Push(Body):
    targets: Targets
    path: RemotePath
    mode: Mode = "0644"
    owner: Owner | None = None  # USER or USER:GROUP; default: the agent's user (root)
    timeout: Annotated[float, Field(ge=1, le=WEEK, allow_inf_nan=False)] = DEFAULT_TIMEOUT


class FetchQuery(Query):
    server: Name
    path: RemotePath


# -- answers ------------------------------------------------------------------------------------
class UploadAnswer(Answer):
    id: str
    name: str
    size: int
    sha256: str
    created_by: str
    created_at: str | None
    expires_at: str | None


class UploadListAnswer(Answer):
    files: list[UploadAnswer]
    max_upload: int
    max_fetch: int

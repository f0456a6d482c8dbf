"""Declaring what the API takes and gives (pydantic; no Flask): a request body or query is a
model, declared once, and validation, the error message and the OpenAPI schema all come
from it (web/endpoint.py reads requests with it; web/openapi.py documents it).

Bodies are strict (no "5" for 5, no true for 1) and refuse unknown fields; every string has
a length bound and no NUL. Query arguments arrive as text, so query models convert ("20" is
20) but are otherwise as strict. Answers are declared too (`Answer`: fields may be added
later, so clients must ignore what they do not know); hot paths build their answers by hand,
and tests check those against the same declarations.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
)

from kernel.exceptions import InvalidInput
from kernel.names import (
    ENV_NAME_PATTERN,
    ENV_NAME_RE,
    NAME_PATTERN,
    NAME_RE,
    NAME_RULE,
    TAG_PATTERN,
    TAG_RE,
    TAG_RULE,
)

MAX_ID = 2**31 - 1  # what an INTEGER column holds
WEEK = 7 * 86400


class Body(BaseModel):
    """A request body: strict, unknown fields refused."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class Query(BaseModel):
    """Query arguments: converted from text, unknown ones ignored (as browsers add some)."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class Answer(BaseModel):
    """An answer's shape, for the OpenAPI document (and tests of hand-built answers)."""

    model_config = ConfigDict(extra="allow")


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")
    return value


def _rule(regex: Any, rule: str) -> Any:
    def check(value: str) -> str:
        if not regex.fullmatch(value):
            raise ValueError(rule)
        return value

    return check


NoNul = AfterValidator(_no_nul)


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


NotBlank = AfterValidator(_not_blank)


def one_of(values: tuple[str, ...]) -> tuple[AfterValidator, WithJsonSchema]:
    """Annotated metadata: the value must be one of ``values`` (and the schema says so)."""

    def check(value: str) -> str:
        if value not in values:
            raise ValueError(f"must be one of {', '.join(values)}")
        return value

    return AfterValidator(check), WithJsonSchema({"type": "string", "enum": list(values)})


Name = Annotated[
    str,
    AfterValidator(_rule(NAME_RE, NAME_RULE)),
    WithJsonSchema({"type": "string", "pattern": NAME_PATTERN}),
]
Tag = Annotated[
    str,
    AfterValidator(_rule(TAG_RE, TAG_RULE)),
    WithJsonSchema({"type": "string", "pattern": TAG_PATTERN}),
]
EnvName = Annotated[
    str,
    AfterValidator(_rule(ENV_NAME_RE, "is not a valid environment variable name")),
    WithJsonSchema({"type": "string", "pattern": ENV_NAME_PATTERN}),
]
Tags = Annotated[list[Tag], Field(max_length=64)]
Id = Annotated[int, Field(ge=1, le=MAX_ID)]


def parse(model: type[BaseModel], data: Any) -> Any:
    """``data`` as ``model``, or InvalidInput with one clear sentence for the first problem."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise InvalidInput(describe(e)) from None


def describe(error: ValidationError) -> str:
    """pydantic's first complaint, said the way Kernel's messages are."""
    unknown = [_where(e["loc"]) for e in error.errors() if e["type"] == "extra_forbidden"]
    if unknown:
        return f"unknown field(s): {', '.join(unknown)}"
    first = error.errors()[0]
    loc, kind = tuple(first["loc"]), first["type"]
    if loc and loc[-1] == "[key]":  # a bad key of a mapping, e.g. an env variable name
        loc = loc[:-1]
        subject = f"'{_where(loc[:-1])}' key {str(loc[-1])[:80]!r}"
    else:
        subject = f"'{_where(loc)}'" if loc else "the body"
    if kind == "missing":
        return f"{subject} is required"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"{subject} must be an object"
    message = str(first["msg"]).removeprefix("Value error, ")
    message = message[:1].lower() + message[1:]
    message = _SHOULD_BE_A.sub("must be a ", message)
    message = _SHOULD.sub("must ", message)
    return f"{subject} {message}"


_SHOULD_BE_A = re.compile(r"^(?:input|string|list|value|dictionary) should be a valid ")
_SHOULD = re.compile(r"^(?:input|string|list|value|dictionary) should ")


def _where(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)[:80]
    return out

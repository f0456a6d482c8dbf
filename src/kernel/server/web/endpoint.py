"""`@endpoint`: what a route takes and answers, declared once on the view.

    @bp.post("")
    @role("operator")
    @endpoint("run a command on servers", body=JobCreate, answers={201: JobAnswer})
    def create(body: JobCreate) -> ...

The view gets its body (``body=``) and query (``query=``) already read and validated: a
body that is not JSON, not an object, or breaks its model is a 400 naming the field, before
the view runs. web/openapi.py builds the API document from these declarations and the app's
routes, so the two cannot drift apart.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from flask import request
from pydantic import BaseModel

from kernel.exceptions import InvalidInput
from kernel.jsontext import lone_surrogate_at, may_hold_surrogates
from kernel.server.core.inputs import parse

F = TypeVar("F", bound=Callable[..., Any])
MARK = "_kernel_endpoint"


@dataclass(frozen=True)
class Endpoint:
    summary: str
    body: type[BaseModel] | None = None
    body_required: bool = True
    query: type[BaseModel] | None = None
    answers: dict[int, type[BaseModel] | None] = field(default_factory=dict)
    produces: str = "application/json"
    consumes: str | None = None  # a raw body the view reads itself (an upload)
    description: str = ""


def endpoint(
    summary: str,
    *,
    body: type[BaseModel] | None = None,
    body_required: bool = True,
    query: type[BaseModel] | None = None,
    answers: dict[int, type[BaseModel] | None] | None = None,
    produces: str = "application/json",
    consumes: str | None = None,
) -> Callable[[F], F]:
    """Declare a view's input and answers (see the module doc). ``body_required=False``: an
    empty body means the model's defaults. ``answers`` maps success statuses to their models
    (None: documented without a schema); errors are always ``{error, message}``.
    ``consumes``: the view reads a raw body of this type itself (streamed, not parsed)."""

    def deco(view: F) -> F:
        meta = Endpoint(
            summary=summary,
            body=body,
            body_required=body_required,
            query=query,
            answers=answers or {200: None},
            produces=produces,
            consumes=consumes,
            description=(view.__doc__ or "").strip(),
        )

        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if meta.query is not None:
                # An empty argument (``?limit=``) is the same as none.
                given = {k: v for k, v in request.args.items() if v != ""}
                kwargs["query"] = parse(meta.query, given)
            if meta.body is not None:
                raw = request.get_data(cache=True)
                if not raw and not meta.body_required:
                    kwargs["body"] = parse(meta.body, {})
                else:
                    kwargs["body"] = parse(meta.body, json_object(raw))
            return view(*args, **kwargs)

        setattr(wrapper, MARK, meta)
        return wrapper  # type: ignore[return-value]

    return deco


def declared(view: Callable[..., Any]) -> Endpoint | None:
    found: Endpoint | None = getattr(view, MARK, None)
    return found


def parse_json(raw: bytes) -> Any:
    """A request body as JSON, or InvalidInput saying why not. Text that UTF-8 cannot carry
    (a lone surrogate from a ``\\ud800`` escape) is refused here, where it first comes in:
    stored or handed to an agent it would fail later, as a 500 or worse."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise InvalidInput("the body is not UTF-8") from None
    except RecursionError:
        raise InvalidInput("the body is JSON nested too deeply") from None
    except ValueError as e:
        raise InvalidInput(f"the body is not valid JSON: {e}") from None
    if may_hold_surrogates(raw):
        where = lone_surrogate_at(data)
        if where is not None:
            raise InvalidInput(f"{where} is not valid Unicode text (a lone surrogate)")
    return data


def json_object(raw: bytes) -> dict[str, Any]:
    data = parse_json(raw) if raw else None
    if not isinstance(data, dict):
        raise InvalidInput("the body must be a JSON object")
    return data

"""The server's errors and the one handler that renders them.

    ServerError (kernel.exceptions)          status 500 unless a subclass says otherwise
    └── HTTPError                            has .status and .slug; rendered as JSON
        ├── BadRequest        400 bad_request       malformed or invalid input
        ├── Unauthorized      401 unauthorized      no or wrong credentials
        ├── Forbidden         403 forbidden         authenticated, but the role is too low
        ├── NotFound          404 not_found
        ├── Conflict          409 conflict          duplicate name, token already used, …
        ├── Gone              410 gone              expired token
        ├── TooManyRequests   429 rate_limited      login rate limit
        └── AgentFailed       502 agent_unreachable the agent did not answer or refused

Every error answer is ``{"error": slug, "message": text}``; an unexpected exception is logged
and answered as a 500 with no traceback.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from kernel.exceptions import ServerError

log = logging.getLogger(__name__)


class HTTPError(ServerError):
    status = 500
    slug = "internal"

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra


class BadRequest(HTTPError, ValueError):
    status, slug = 400, "bad_request"


class Unauthorized(HTTPError):
    status, slug = 401, "unauthorized"


class Forbidden(HTTPError):
    status, slug = 403, "forbidden"


class NotFound(HTTPError, LookupError):
    status, slug = 404, "not_found"


class Conflict(HTTPError):
    status, slug = 409, "conflict"


class Gone(HTTPError):
    status, slug = 410, "gone"


class TooManyRequests(HTTPError):
    status, slug = 429, "rate_limited"


class AgentFailed(HTTPError):
    status, slug = 502, "agent_unreachable"


def error_response(status: int, slug: str, message: str, **extra: Any) -> Response:
    resp = jsonify({"error": slug, "message": message, **extra})
    resp.status_code = status
    return resp


def register(app: Flask) -> None:
    @app.errorhandler(HTTPError)
    def _ours(err: HTTPError) -> Response:
        return error_response(err.status, err.slug, err.message, **err.extra)

    @app.errorhandler(HTTPException)
    def _werkzeug(err: HTTPException) -> Response:
        status = err.code or 500
        slug = (err.name or "error").lower().replace(" ", "_")
        resp = error_response(status, slug, err.description or err.name)
        if status == 405 and err.response is None:
            allowed = getattr(err, "valid_methods", None)
            if allowed:
                resp.headers["Allow"] = ", ".join(allowed)
        return resp

    @app.errorhandler(Exception)
    def _unexpected(err: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(500, "internal", "internal server error (logged on the server)")

"""Errors as HTTP: the one table from domain error kinds (kernel.exceptions) to statuses, and
the one handler that renders every error — JSON ``{"error": slug, "message": text, …extra}``
to API clients, an HTML page to browsers. An unexpected exception is logged and answered as a
500 with no traceback."""

from __future__ import annotations

import html
import logging
from typing import Any
from urllib.parse import urlencode

from flask import Flask, Response, jsonify, render_template, request
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException

from kernel.exceptions import (
    AgentFailed,
    ConfigError,
    Conflict,
    Expired,
    InvalidInput,
    KernelError,
    NotAllowed,
    NotAuthenticated,
    NotFound,
    RateLimited,
    StorageFull,
    TooLarge,
)
from kernel.server.core.db import out_of_space

log = logging.getLogger(__name__)

# Looked up along the error's class hierarchy: the most specific kind listed wins.
STATUS: dict[type[KernelError], tuple[int, str]] = {
    InvalidInput: (400, "bad_request"),
    NotAuthenticated: (401, "unauthorized"),
    NotAllowed: (403, "forbidden"),
    NotFound: (404, "not_found"),
    Conflict: (409, "conflict"),
    Expired: (410, "gone"),
    TooLarge: (413, "too_large"),
    RateLimited: (429, "rate_limited"),
    AgentFailed: (502, "agent_unreachable"),
    StorageFull: (507, "storage_full"),
    ConfigError: (500, "config"),
}


def status_of(err: KernelError) -> tuple[int, str]:
    for kind in type(err).__mro__:
        if kind in STATUS:
            return STATUS[kind]
    return 500, "internal"


def wants_html() -> bool:
    """A browser asking for a page (not an API client, not fetch() of JSON), or the console's
    htmx asking for a fragment."""
    if request.path.startswith(("/api/", "/agent/")):
        return False
    if request.headers.get("HX-Request") == "true":
        return True
    accept = request.accept_mimetypes
    named = {value for value, _quality in accept}
    return "text/html" in named and accept["text/html"] >= accept["application/json"]


# Without the console's template (it failed to render): the bare page.
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{status} — Kernel</title></head>
<body><main><h1>{status}</h1><p>{message}</p><p><a href="/">Kernel</a></p></main></body></html>
"""


def error_response(status: int, slug: str, message: str, **extra: Any) -> Response:
    if wants_html():
        if status == 401 and request.method == "GET" and "HX-Request" not in request.headers:
            # A page that needs a login: the login page, then back here.
            where = request.full_path.rstrip("?")
            target = "/login" if where == "/" else "/login?" + urlencode({"next": where})
            return Response("", status=302, headers={"Location": target})
        resp = Response(_html(status, slug, message), status=status, mimetype="text/html")
        if status == 401:  # htmx: a session that ended sends the whole tab to the login page
            resp.headers["HX-Redirect"] = "/login"
    else:
        resp = jsonify({"error": slug, "message": message, **extra})
        resp.status_code = status
    if "retry_after" in extra:
        resp.headers["Retry-After"] = str(extra["retry_after"])
    return resp


def _html(status: int, slug: str, message: str) -> str:
    """The console's error page (a fragment for htmx), or the bare page if that fails."""
    template = "error_fragment.html" if request.headers.get("HX-Request") else "error.html"
    try:
        return render_template(template, status=status, slug=slug, message=message)
    except Exception:  # no console, or the error is in rendering itself
        log.exception("could not render the error page")
        return PAGE.format(status=status, message=html.escape(message))


def register(app: Flask) -> None:
    @app.errorhandler(KernelError)
    def _ours(err: KernelError) -> Response:
        status, slug = status_of(err)
        if status >= 500:
            log.error("%s: %s", type(err).__name__, err.message)
        return error_response(status, slug, err.message or slug, **err.extra)

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

    @app.errorhandler(OperationalError)
    def _database(err: OperationalError) -> Response:
        if out_of_space(err):
            return _storage_full(err.orig)
        # Locked past busy_timeout, the connection lost, PostgreSQL restarting: worth a retry.
        log.error("the database failed: %s", err.orig)
        return error_response(
            503, "unavailable", "the database is not available; try again", retry_after=5
        )

    @app.errorhandler(Exception)
    def _unexpected(err: Exception) -> Response:
        if isinstance(err, OSError) and out_of_space(err):  # a file in the data dir
            return _storage_full(err)
        log.exception("unhandled error")
        return error_response(500, "internal", "internal server error (logged on the server)")


def _storage_full(cause: object) -> Response:
    # A full disk is the one database failure an operator can act on from the message alone;
    # one line in the log (not a traceback per request while it lasts).
    log.error("a write was refused, the disk is full: %s", cause)
    return error_response(507, "storage_full", FULL_MESSAGE)


FULL_MESSAGE = (
    "the server's disk is full, so this request was not saved; free space where the server "
    "keeps its data (the data dir, or the database's disk) and try again"
)

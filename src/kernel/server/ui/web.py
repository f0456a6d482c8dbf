"""The console's blueprint and what every page shares: rendering with the caller's role,
reading a form into the API's own pydantic models (so a rule is written once), the static
files with content-hashed URLs, and answers for htmx requests."""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, abort, render_template, request, send_from_directory, url_for
from flask.typing import ResponseReturnValue
from flask_babel import get_locale
from flask_wtf.csrf import generate_csrf
from pydantic import BaseModel

from kernel.exceptions import KernelError
from kernel.server.auth.roles import role_allows
from kernel.server.core.inputs import parse
from kernel.server.ui import words
from kernel.server.ui.i18n import HTML_LANG, LANGUAGES
from kernel.server.web.access import current_user, public

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
bp = Blueprint("ui", __name__, template_folder="templates")


# -- rendering --------------------------------------------------------------------------------
def render(template: str, **values: Any) -> str:
    return render_template(template, **values)


def is_htmx() -> bool:
    return request.headers.get("HX-Request") == "true"


def redirect_to(url: str) -> Response:
    """After an action: htmx follows HX-Redirect; a plain form gets a 303."""
    if is_htmx():
        resp = Response("", status=204)
        resp.headers["HX-Redirect"] = url
        return resp
    resp = Response("", status=303)
    resp.headers["Location"] = url
    return resp


def refresh_page() -> Response:
    resp = Response("", status=204)
    resp.headers["HX-Refresh"] = "true"
    return resp


def shared_context() -> dict[str, Any]:
    """What every template may use (also the error page, rendered outside the blueprint)."""
    try:
        user = current_user()
    except KernelError:  # a bad Authorization header on an error page: render anonymously
        user = None
    role = user.role if user is not None else None
    return {
        "user": user,
        "can_operate": bool(role and role_allows(role, "operator")),
        "is_admin": bool(role and role_allows(role, "admin")),
        "csrf_token": generate_csrf,
        "asset": asset_url,
        "locale": str(get_locale() or "en"),
        "languages": LANGUAGES,
        "html_lang": lambda: HTML_LANG.get(str(get_locale() or "en"), "en"),
        "html_lang_of": lambda code: HTML_LANG.get(code, code),
        **words.FILTERS,
        "unit_words": words.unit_words,
        "state_words": words.state_words,
        "run_words": words.run_words,
    }


# -- forms ------------------------------------------------------------------------------------
def form_text(name: str, limit: int = 100_000) -> str:
    return request.form.get(name, "")[:limit]


def form_list(name: str) -> list[str]:
    """A list field: repeated inputs (checkboxes) or one comma/space separated text box."""
    values = request.form.getlist(name)
    out: list[str] = []
    for v in values:
        out += [part for part in v.replace(",", " ").split() if part]
    return out[:10000]


def form_model(model: type[BaseModel], data: dict[str, Any]) -> Any:
    """The form's values as the API's model (the same checks and messages as the API)."""
    return parse(model, data)


# -- static files -----------------------------------------------------------------------------
@cache
def _digest(filename: str) -> str:
    path = STATIC / filename
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12] if path.is_file() else "0"


def asset_url(filename: str) -> str:
    """A static file's URL with its content hash: cached for a year, never stale."""
    return url_for("ui.static_file", filename=filename, v=_digest(filename))


@bp.get("/ui/static/<path:filename>")
@public
def static_file(filename: str) -> ResponseReturnValue:
    if filename.endswith((".lock",)) or "SHA256SUMS" in filename:
        abort(404)
    forever = bool(request.args.get("v"))  # the URL changes with the content (asset_url)
    resp = send_from_directory(STATIC, filename, max_age=365 * 86400 if forever else 0)
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp


def toast(message: str, status: int = 204) -> Response:
    """An answer with nothing to swap that shows ``message`` (kernel.js: "kernel:toast")."""
    resp = Response("", status=status)
    resp.headers["HX-Trigger"] = json.dumps({"kernel:toast": message})
    return resp

"""Logging in and out of the console, and choosing its language. The checks (password, rate
limit, audit) are the API's own (`auth.api.check_credentials`)."""

from __future__ import annotations

from flask import current_app, jsonify, make_response, redirect, request, session
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _

from kernel.exceptions import NotAuthenticated, RateLimited
from kernel.server.auth.api import check_credentials
from kernel.server.ui.i18n import COOKIE, COOKIE_AGE, LANGUAGES
from kernel.server.ui.security import safe_next
from kernel.server.ui.web import bp, render
from kernel.server.web import audit
from kernel.server.web.access import csrf, current_user, login_session, public, role
from kernel.server.web.errors import wants_html


@bp.route("/login", methods=["GET", "POST"])
@public
def login() -> ResponseReturnValue:
    if request.method == "GET":
        target = safe_next(request.args.get("next"))
        if current_user() is not None:
            return redirect(target)
        return render("login.html", next=target, error=None, retry_after=0)
    csrf.protect()
    target = safe_next(request.form.get("next"))
    name = request.form.get("username", "")[:64]
    try:
        user = check_credentials(name, request.form.get("password", ""))
    # Refusals are shown on the form with a 200 (an error status would be logged by the
    # browser as a failed load); the audit line still records them as refused.
    except RateLimited as err:
        audit.refused(429, err.message)
        wait = int(str(err.extra.get("retry_after", 1)))
        error = _("Too many failed logins. Try again in %(n)s s.", n=wait)
        body = render("login.html", next=target, error=error, retry_after=wait, username=name)
        resp = make_response(body)
        resp.headers["Retry-After"] = str(wait)
        return resp
    except NotAuthenticated as err:
        audit.refused(401, err.message)
        error = _("Wrong user name or password.")
        return render("login.html", next=target, error=error, retry_after=0, username=name)
    login_session(user)
    return redirect(target)


@bp.post("/logout")
@role("viewer")
def logout() -> ResponseReturnValue:
    audit.note("auth.logout")
    session.clear()
    if wants_html():
        return redirect("/login", 303)
    return jsonify({"ok": True})


@bp.post("/lang")
@public
def set_language() -> ResponseReturnValue:
    """Remember the chosen language (a cookie; no account needed, so the login page has it)."""
    csrf.protect()
    chosen = request.form.get("lang", "")
    resp = redirect(safe_next(request.form.get("next")), 303)
    if chosen in LANGUAGES:
        resp.set_cookie(
            COOKIE,
            chosen,
            max_age=COOKIE_AGE,
            samesite="Lax",
            httponly=True,
            secure=bool(current_app.config.get("SESSION_COOKIE_SECURE")),
        )
    return resp

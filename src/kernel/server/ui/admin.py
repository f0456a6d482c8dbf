"""The audit log, users and API tokens, and settings / about. User and token changes go
through the auth API's own functions (auth/api.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import current_app, request
from flask.typing import ResponseReturnValue
from sqlalchemy import select
from sqlalchemy.engine import make_url

from kernel import __version__
from kernel.exceptions import NotAuthenticated
from kernel.server.auth.api import change_user, issue_token, new_user, revoke
from kernel.server.auth.roles import ROLES
from kernel.server.auth.schemas import TokenCreate, UserCreate, UserEdit
from kernel.server.core.settings import SETTINGS, public_url
from kernel.server.inventory import enrollment
from kernel.server.models.audit import AuditEntry
from kernel.server.models.users import ApiToken, User
from kernel.server.ui.web import bp, form_model, form_text, redirect_to, render
from kernel.server.web import audit, context
from kernel.server.web.access import current_user, role

AUDIT_PAGE = 100


@bp.get("/audit")
@role("admin")
def audit_log() -> str:
    actor = request.args.get("actor", "")[:64]
    action = request.args.get("action", "")[:64]
    target = request.args.get("target", "")[:200]
    before = request.args.get("before", type=int)
    q = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(AUDIT_PAGE + 1)
    if actor:
        q = q.where(AuditEntry.actor == actor)
    if action:
        q = q.where(AuditEntry.action.startswith(action, autoescape=True))
    if target:
        q = q.where(AuditEntry.target.contains(target, autoescape=True))
    if before and 0 < before < 2**62:
        q = q.where(AuditEntry.id < before)
    rows = list(context.session().scalars(q))
    return render(
        "audit.html",
        active="audit",
        entries=rows[:AUDIT_PAGE],
        more=len(rows) > AUDIT_PAGE,
        filters={"actor": actor, "action": action, "target": target},
    )


# -- users ----------------------------------------------------------------------------------------
@bp.get("/users")
@role("admin")
def users() -> str:
    rows = context.session().scalars(select(User).order_by(User.name)).all()
    return render("users.html", active="users", users=rows, roles=ROLES)


@bp.post("/users")
@role("admin")
def add_user() -> ResponseReturnValue:
    fields = {
        "name": form_text("name", 200).strip(),
        "role": form_text("role", 20),
        "password": form_text("password", 2000),
    }
    new_user(form_model(UserCreate, fields))
    return redirect_to("/users")


@bp.post("/users/<int:user_id>")
@role("admin")
def edit_user(user_id: int) -> ResponseReturnValue:
    fields: dict[str, Any] = {}
    if form_text("role", 20):
        fields["role"] = form_text("role", 20)
    if form_text("password", 2000):
        fields["password"] = form_text("password", 2000)
    if form_text("disabled", 5):
        fields["disabled"] = form_text("disabled", 5) == "yes"
    change_user(user_id, form_model(UserEdit, fields))
    return redirect_to("/users")


# -- your account and API tokens --------------------------------------------------------------
def _me() -> User:
    user = current_user()
    if user is None:
        raise NotAuthenticated("log in")
    return user


@bp.get("/account")
@role("viewer")
def account() -> str:
    return _account_page(None)


def _account_page(new: dict[str, Any] | None) -> str:
    me = _me()
    q = select(ApiToken).order_by(ApiToken.id)
    if me.role != "admin":
        q = q.where(ApiToken.user_id == me.id)
    tokens = context.session().scalars(q).all()
    return render("account.html", active="account", tokens=tokens, new=new)


@bp.post("/account/tokens")
@role("viewer")
def create_token() -> str:
    body = form_model(TokenCreate, {"name": form_text("name", 200).strip() or "console"})
    me = _me()
    audit.note("token.create", target=me.name, token_name=body.name)
    return _account_page(issue_token(me, body.name))


@bp.post("/account/tokens/<int:token_id>/revoke")
@role("viewer")
def revoke_token(token_id: int) -> ResponseReturnValue:
    revoke(token_id)
    return redirect_to("/account")


# -- settings and about -----------------------------------------------------------------------
@bp.get("/settings")
@role("viewer")
def settings() -> str:
    cfg = current_app.config
    base = public_url(cfg, request.host_url)
    db_url = cfg.get("DATABASE_URL")
    database = (
        make_url(db_url).render_as_string(hide_password=True)
        if db_url
        else f"SQLite: {Path(cfg['DATA_DIR']) / 'kernel.db'}"
    )
    shown = []
    for s in SETTINGS:
        value = cfg.get(s.name)
        if s.name in ("SECRET_KEY", "ARTIFACT_KEY", "DATABASE_URL"):
            value = "•••" if value else None
        shown.append((s, value))
    poller = context.poller()
    return render(
        "settings.html",
        active="settings",
        version=__version__,
        base=base,
        install_line=f"curl -sL {base}/static/agent/install.sh | bash",
        agent_sha256=enrollment_sha(),
        data_dir=cfg["DATA_DIR"],
        database=database,
        settings=shown,
        poller=poller,
        runner=context.runner(),
    )


def enrollment_sha() -> str:
    import hashlib

    return hashlib.sha256(enrollment.agent_file()).hexdigest()

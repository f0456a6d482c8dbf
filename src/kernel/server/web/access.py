"""Who is calling, and may they: user resolution (session cookie or API token), the role
decorator every view wears, and CSRF for cookie sessions.

A test walks ``app.url_map`` and fails for any view without an access mark, so a new route
cannot be forgotten: it must say ``@role("viewer"|"operator"|"admin")`` or ``@public``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask, current_app, g, request, session
from flask_wtf.csrf import CSRFProtect
from sqlalchemy import bindparam, select, update

from kernel.exceptions import KernelError, NotAllowed, NotAuthenticated
from kernel.server.auth.credentials import token_hash
from kernel.server.auth.roles import role_allows
from kernel.server.core.db import utcnow
from kernel.server.models.users import ApiToken, User
from kernel.server.web import context

F = TypeVar("F", bound=Callable[..., Any])
csrf = CSRFProtect()
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def public(view: F) -> F:
    """No login needed (the view does its own checks, e.g. an enrollment token)."""
    view._kernel_access = "public"  # type: ignore[attr-defined]
    return view


def role(need: str) -> Callable[[F], F]:
    def deco(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            user = current_user()
            if user is None:
                raise NotAuthenticated("log in or send 'Authorization: Bearer <token>'")
            if not role_allows(user.role, need):
                raise NotAllowed(f"this needs the {need} role; you are {user.role}")
            if g.auth_via == "session" and request.method in MUTATING:
                csrf.protect()
            return view(*args, **kwargs)

        wrapper._kernel_access = need  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return deco


def current_user() -> User | None:
    if "user" not in g:
        g.user, g.auth_via = _resolve()
    return g.user


def actor() -> str:
    """The calling user's name for the audit log, or "-" (never raises)."""
    try:
        user = current_user()
    except KernelError:
        return "-"
    return user.name if user is not None else "-"


def source_address() -> str:
    return request.remote_addr or "-"


def _resolve() -> tuple[User | None, str]:
    # A short reading session of its own: the caller is known before the view starts, and no
    # write lock is taken for it (on SQLite every API call would otherwise queue behind the
    # runner's writes just to be let in).
    header = request.headers.get("Authorization", "")
    db = context.db()
    with db.reading() as s:
        if header:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise NotAuthenticated("the Authorization header must be 'Bearer <token>'")
            row = s.execute(_TOKEN_USER, {"hash": token_hash(token.strip())}).first()
            if row is None or row.disabled:
                raise NotAuthenticated("unknown or revoked API token")
            # A transient User (every API call comes through here; loading an ORM entity
            # costs more than the query): the caller reads its fields, never saves it.
            user = User(
                id=row.user_id,
                name=row.name,
                role=row.role,
                disabled=row.disabled,
                password_hash=row.password_hash,
                created_at=row.created_at,
            )
            via = "token"
            stale = row.last_used_at is None or (utcnow() - row.last_used_at).total_seconds() > 60
        else:
            uid = session.get("uid")
            known = s.get(User, uid) if isinstance(uid, int) else None
            # A changed password (new hash) ends existing sessions.
            if known and not known.disabled and session.get("pw") == known.password_hash[-16:]:
                return known, "session"
            if uid is not None:
                session.clear()
            return None, "none"
    if stale:  # recorded to the minute: a write per request would serialise every API call
        with db.session() as w:
            w.execute(
                update(ApiToken).where(ApiToken.id == row.token_id).values(last_used_at=utcnow())
            )
    return user, via


_TOKEN_USER = (
    select(
        ApiToken.id.label("token_id"),
        ApiToken.last_used_at,
        User.id.label("user_id"),
        User.name,
        User.role,
        User.disabled,
        User.password_hash,
        User.created_at,
    )
    .join(User, ApiToken.user_id == User.id)
    .where(ApiToken.token_hash == bindparam("hash"))
)


def login_session(user: User) -> None:
    session.clear()
    session["uid"] = user.id
    session["pw"] = user.password_hash[-16:]
    session.permanent = True


def init_app(app: Flask) -> None:
    csrf.init_app(app)
    app.config.setdefault(
        "SESSION_COOKIE_SECURE", str(app.config.get("URL") or "").startswith("https://")
    )


def unguarded_endpoints(app: Flask | None = None) -> list[str]:
    """Endpoints whose view carries no access mark (must be empty; see tests)."""
    app = app or current_app
    bad = []
    for rule in app.url_map.iter_rules():
        view = app.view_functions[rule.endpoint]
        if not hasattr(view, "_kernel_access"):
            bad.append(rule.endpoint)
    return bad

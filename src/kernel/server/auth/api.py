"""The routes of users and their credentials: checking a user name and password (the
console's /login page, ui/login.py, uses it too), API tokens (how the CLI logs in), and user
administration (/api/v1/users, admin)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, g, jsonify
from flask_wtf.csrf import generate_csrf
from sqlalchemy import func, select

from kernel.exceptions import InvalidInput, NotAuthenticated, NotFound
from kernel.server.auth.credentials import hash_password, new_token, token_hash, verify_password
from kernel.server.auth.schemas import (
    MeAnswer,
    Ok,
    TokenCreate,
    TokenIssued,
    TokenListAnswer,
    TokenRequest,
    UserAnswer,
    UserCreate,
    UserEdit,
    UserListAnswer,
)
from kernel.server.auth.users import check_password, create_user
from kernel.server.models.users import ApiToken, User
from kernel.server.web import audit, context
from kernel.server.web.access import csrf, current_user, public, role, source_address
from kernel.server.web.endpoint import endpoint

bp = Blueprint("auth", __name__)


def check_credentials(name: str, password: str) -> User:
    """The user, or NotAuthenticated/RateLimited; failures count towards the rate limit."""
    source = source_address()
    g.audit_actor = name[:64] or "-"
    audit.note("auth.login", target=name[:64])
    limiter = context.components().limiter
    limiter.attempt(name, source)  # RateLimited when there is no room: nothing is checked
    with context.db().reading() as s:  # no write lock held while the limiter writes
        user = s.scalars(select(User).where(User.name == name)).first()
    if user is None or user.disabled or not verify_password(user.password_hash, password):
        raise NotAuthenticated("wrong user name or password")  # the attempt stays counted
    limiter.succeeded(name)
    return user


@bp.post("/api/v1/auth/token")
@public
@csrf.exempt
@endpoint("trade a user name and password for an API token", body=TokenRequest,
          answers={201: TokenIssued})  # fmt: skip
def token_for_password(body: TokenRequest) -> tuple[Response, int]:
    """How the CLI logs in; failed attempts count towards the login rate limit."""
    user = check_credentials(body.username, body.password)
    audit.note("token.create", target=body.username, token_name=body.name)
    return jsonify(issue_token(user, body.name)), 201


def issue_token(user: User, label: str) -> dict[str, object]:
    s = context.session()
    secret = new_token()
    row = ApiToken(user_id=user.id, name=label, token_hash=token_hash(secret))
    s.add(row)
    s.commit()
    return {**row.to_json(), "token": secret, "role": user.role}


@bp.get("/api/v1/me")
@role("viewer")
@endpoint("the calling user (and a CSRF token for cookie sessions)", answers={200: MeAnswer})
def me() -> Response:
    user = current_user()
    assert user is not None
    return jsonify({**user.to_json(), "csrf_token": generate_csrf()})


@bp.get("/api/v1/tokens")
@role("viewer")
@endpoint("API tokens (yours; every user's for admins)", answers={200: TokenListAnswer})
def list_tokens() -> Response:
    user = current_user()
    assert user is not None
    q = select(ApiToken).order_by(ApiToken.id)
    if user.role != "admin":
        q = q.where(ApiToken.user_id == user.id)
    return jsonify({"tokens": [t.to_json() for t in context.session().scalars(q)]})


@bp.post("/api/v1/tokens")
@role("viewer")
@endpoint("a new API token for yourself", body=TokenCreate, body_required=False,
          answers={201: TokenIssued})  # fmt: skip
def create_token(body: TokenCreate) -> tuple[Response, int]:
    user = current_user()
    assert user is not None
    audit.note("token.create", target=user.name, token_name=body.name)
    return jsonify(issue_token(user, body.name)), 201


@bp.delete("/api/v1/tokens/<int:token_id>")
@role("viewer")
@endpoint("revoke a token", answers={200: Ok})
def revoke_token(token_id: int) -> Response:
    revoke(token_id)
    return jsonify({"ok": True})


def revoke(token_id: int) -> None:
    """Revoke one of your tokens (an admin: anyone's)."""
    user = current_user()
    assert user is not None
    s = context.session()
    row = s.get(ApiToken, token_id)
    if row is None or (user.role != "admin" and row.user_id != user.id):
        raise NotFound(f"no token {token_id}")
    audit.note("token.revoke", target=row.user.name, token_name=row.name)
    s.delete(row)
    s.commit()


def count_users() -> int:
    return int(context.session().scalar(select(func.count()).select_from(User)) or 0)


# ------------------------------------------------------------------------------------------
users_bp = Blueprint("users", __name__, url_prefix="/api/v1/users")


@users_bp.get("")
@role("admin")
@endpoint("users (admin)", answers={200: UserListAnswer})
def list_users() -> Response:
    rows = context.session().scalars(select(User).order_by(User.name))
    return jsonify({"users": [u.to_json() for u in rows]})


@users_bp.post("")
@role("admin")
@endpoint("add a user (admin)", body=UserCreate, answers={201: UserAnswer})
def add_user(body: UserCreate) -> tuple[Response, int]:
    return jsonify(new_user(body).to_json()), 201


def new_user(body: UserCreate) -> User:
    audit.note("user.create", target=body.name, role=body.role)
    s = context.session()
    user = create_user(s, body.name, body.role, body.password)
    s.commit()
    return user


@users_bp.patch("/<int:user_id>")
@role("admin")
@endpoint("change role, password, disabled (admin)", body=UserEdit, answers={200: UserAnswer})
def edit_user(user_id: int, body: UserEdit) -> Response:
    return jsonify(change_user(user_id, body).to_json())


def change_user(user_id: int, body: UserEdit) -> User:
    """Change a user's role, password or disabled flag (no admin can demote themself)."""
    s = context.session()
    user = s.get(User, user_id)
    if user is None:
        raise NotFound(f"no user {user_id}")
    me = current_user()
    changes: dict[str, Any] = {}
    if body.role is not None:
        user.role = changes["role"] = body.role
    if body.disabled is not None:
        user.disabled = changes["disabled"] = body.disabled
    if body.password is not None:
        user.password_hash = hash_password(check_password(body.password))
        changes["password"] = "changed"  # noqa: S105 (audit note, not a secret)
    if me is not None and me.id == user.id and (user.disabled or user.role != "admin"):
        raise InvalidInput("you cannot demote or disable yourself")
    audit.note("user.edit", target=user.name, **changes)
    s.commit()
    return user


blueprints = (bp, users_bp)

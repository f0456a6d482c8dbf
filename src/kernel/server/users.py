"""User administration (admin only) and the user creation shared with the command line."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from . import audit, context
from .access import current_user, role
from .errors import BadRequest, Conflict, NotFound
from .models import ROLES, User
from .params import get_bool, get_name, get_str, json_body, reject_unknown
from .security import hash_password, new_password

bp = Blueprint("users", __name__, url_prefix="/api/v1/users")
MIN_PASSWORD = 8


def check_role(value: object) -> str:
    if value not in ROLES:
        raise BadRequest(f"'role' must be one of {', '.join(ROLES)}")
    return str(value)


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise BadRequest(f"the password must have at least {MIN_PASSWORD} characters")
    return password


def create_user(s: Session, name: str, role_name: str, password: str) -> User:
    """Add a user (the caller commits); Conflict if the name is taken."""
    check_role(role_name)
    check_password(password)
    if s.scalars(select(User).where(User.name == name)).first() is not None:
        raise Conflict(f"a user named {name!r} exists")
    user = User(name=name, role=role_name, password_hash=hash_password(password))
    s.add(user)
    try:
        s.flush()
    except IntegrityError:
        raise Conflict(f"a user named {name!r} exists") from None
    return user


def ensure_first_admin(s: Session) -> str | None:
    """On a database with no user, create ``admin`` and return its one-time password."""
    if s.scalar(select(func.count()).select_from(User)):
        return None
    password = new_password()
    create_user(s, "admin", "admin", password)
    return password


@bp.get("")
@role("admin")
def list_users() -> Response:
    rows = context.session().scalars(select(User).order_by(User.name))
    return jsonify({"users": [u.to_json() for u in rows]})


@bp.post("")
@role("admin")
def add_user() -> tuple[Response, int]:
    data = json_body()
    reject_unknown(data, {"name", "role", "password"})
    name = get_name(data) or ""
    role_name = check_role(data.get("role"))
    password = get_str(data, "password", required=True, max_len=1024) or ""
    audit.note("user.create", target=name, role=role_name)
    s = context.session()
    user = create_user(s, name, role_name, password)
    s.commit()
    return jsonify(user.to_json()), 201


@bp.patch("/<int:user_id>")
@role("admin")
def edit_user(user_id: int) -> Response:
    data = json_body()
    reject_unknown(data, {"role", "password", "disabled"})
    s = context.session()
    user = s.get(User, user_id)
    if user is None:
        raise NotFound(f"no user {user_id}")
    me = current_user()
    changes: dict[str, Any] = {}
    if "role" in data:
        user.role = check_role(data["role"])
        changes["role"] = user.role
    if "disabled" in data:
        user.disabled = get_bool(data, "disabled")
        changes["disabled"] = user.disabled
    if "password" in data:
        user.password_hash = hash_password(
            check_password(get_str(data, "password", required=True, max_len=1024) or "")
        )
        changes["password"] = "changed"  # noqa: S105 (audit note, not a secret)
    if me is not None and me.id == user.id and (user.disabled or user.role != "admin"):
        raise BadRequest("you cannot demote or disable yourself")
    audit.note("user.edit", target=user.name, **changes)
    s.commit()
    return jsonify(user.to_json())

"""User administration (/api/v1/users, admin only)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify
from sqlalchemy import select

from kernel.exceptions import InvalidInput, NotFound
from kernel.server.auth.credentials import hash_password
from kernel.server.auth.users import check_password, check_role, create_user
from kernel.server.models.users import User
from kernel.server.web import audit, context
from kernel.server.web.access import current_user, role
from kernel.server.web.params import get_bool, get_name, get_str, json_body, reject_unknown

bp = Blueprint("users", __name__, url_prefix="/api/v1/users")


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
        raise InvalidInput("you cannot demote or disable yourself")
    audit.note("user.edit", target=user.name, **changes)
    s.commit()
    return jsonify(user.to_json())

"""User administration (/api/v1/users, admin only)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify
from sqlalchemy import select

from kernel.exceptions import InvalidInput, NotFound
from kernel.server.auth.credentials import hash_password
from kernel.server.auth.schemas import UserAnswer, UserCreate, UserEdit, UserListAnswer
from kernel.server.auth.users import check_password, create_user
from kernel.server.models.users import User
from kernel.server.web import audit, context
from kernel.server.web.access import current_user, role
from kernel.server.web.endpoint import endpoint

bp = Blueprint("users", __name__, url_prefix="/api/v1/users")


@bp.get("")
@role("admin")
@endpoint("users (admin)", answers={200: UserListAnswer})
def list_users() -> Response:
    rows = context.session().scalars(select(User).order_by(User.name))
    return jsonify({"users": [u.to_json() for u in rows]})


@bp.post("")
@role("admin")
@endpoint("add a user (admin)", body=UserCreate, answers={201: UserAnswer})
def add_user(body: UserCreate) -> tuple[Response, int]:
    audit.note("user.create", target=body.name, role=body.role)
    s = context.session()
    user = create_user(s, body.name, body.role, body.password)
    s.commit()
    return jsonify(user.to_json()), 201


@bp.patch("/<int:user_id>")
@role("admin")
@endpoint("change role, password, disabled (admin)", body=UserEdit, answers={200: UserAnswer})
def edit_user(user_id: int, body: UserEdit) -> Response:
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
    return jsonify(user.to_json())

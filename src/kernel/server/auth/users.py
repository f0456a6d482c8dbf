"""Users: creation (shared by the API and the command line) and the rules for roles and
passwords."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from kernel.exceptions import Conflict, InvalidInput
from kernel.server.auth.credentials import hash_password, new_password
from kernel.server.auth.roles import ROLES
from kernel.server.models.users import User

MIN_PASSWORD = 8


def check_role(value: object) -> str:
    if value not in ROLES:
        raise InvalidInput(f"'role' must be one of {', '.join(ROLES)}")
    return str(value)


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise InvalidInput(f"the password must have at least {MIN_PASSWORD} characters")
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

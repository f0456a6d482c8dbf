"""What the users and tokens API takes and answers (core/inputs.py explains the declarations)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from kernel.server.auth.roles import ROLES
from kernel.server.core.inputs import Answer, Body, Name, NoNul, one_of

Role = Annotated[str, *one_of(ROLES)]
Password = Annotated[str, Field(max_length=1024), NoNul]
Label = Annotated[str, Field(max_length=64), NoNul]


class TokenRequest(Body):
    username: Annotated[str, Field(max_length=64), NoNul]
    password: Password
    name: Label = "cli"  # what the token is for, shown in token lists


class TokenCreate(Body):
    name: Label = "cli"


class UserCreate(Body):
    name: Name
    role: Role
    password: Password


class UserEdit(Body):
    role: Role | None = None
    password: Password | None = None
    disabled: bool | None = None


class UserAnswer(Answer):
    id: int
    name: str
    role: str
    disabled: bool
    created_at: str | None


class MeAnswer(UserAnswer):
    csrf_token: str  # for requests made with the session cookie


class UserListAnswer(Answer):
    users: list[UserAnswer]


class TokenAnswer(Answer):
    id: int
    name: str
    user: str
    created_at: str | None
    last_used_at: str | None


class TokenIssued(TokenAnswer):
    token: str  # shown this once; only its hash is stored
    role: str


class TokenListAnswer(Answer):
    tokens: list[TokenAnswer]


class Ok(Answer):
    ok: bool

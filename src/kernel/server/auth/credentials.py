"""Secrets without I/O: password hashing, and making and hashing tokens and agent keys."""

from __future__ import annotations

import hashlib
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()
# Verifying against this keeps the time of "no such user" equal to "wrong password".
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))

TOKEN_PREFIX = "kt_"  # noqa: S105 (a prefix, not a secret)


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(stored_hash or _DUMMY_HASH, password) and stored_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def new_password() -> str:
    return secrets.token_urlsafe(15)


def new_token(prefix: str = TOKEN_PREFIX) -> str:
    """A high-entropy bearer secret; only its sha256 is stored."""
    return prefix + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    # sha256 is enough: tokens carry 256 random bits, so there is nothing to brute-force.
    return hashlib.sha256(token.encode()).hexdigest()


def new_agent_key() -> str:
    return secrets.token_hex(32)

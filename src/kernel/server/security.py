"""Secrets without I/O: password hashing, token generation and hashing, role ranks, and the
login rate limiter."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import deque

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from .models import ROLES

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


def role_allows(have: str, need: str) -> bool:
    """admin ⊇ operator ⊇ viewer."""
    if have not in ROLES or need not in ROLES:
        return False
    return ROLES.index(have) >= ROLES.index(need)


class LoginLimiter:
    """Counts failed logins per (user name, source address) in a sliding window.

    In memory, per process: a restart forgets, which only ever helps a legitimate user.
    """

    def __init__(self, max_failures: int, window: float) -> None:
        self.max_failures = max_failures
        self.window = window
        self._failures: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        q = self._failures.setdefault(key, deque())
        while q and q[0] <= now - self.window:
            q.popleft()
        return q

    def retry_after(self, name: str, source: str, now: float | None = None) -> float:
        """Seconds until this pair may try again; 0 when it may try now."""
        now = time.monotonic() if now is None else now
        with self._lock:
            q = self._recent((name.lower(), source), now)
            if len(q) < self.max_failures:
                return 0.0
            return max(0.0, q[0] + self.window - now)

    def failed(self, name: str, source: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._recent((name.lower(), source), now).append(now)
            if len(self._failures) > 10000:  # bound memory under a spray of names
                self._failures = {k: v for k, v in self._failures.items() if v}

    def succeeded(self, name: str, source: str) -> None:
        with self._lock:
            self._failures.pop((name.lower(), source), None)

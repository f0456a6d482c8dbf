"""Roles: each can do everything the one before it can."""

from __future__ import annotations

ROLES = ("viewer", "operator", "admin")


def role_allows(have: str, need: str) -> bool:
    """admin ⊇ operator ⊇ viewer."""
    if have not in ROLES or need not in ROLES:
        return False
    return ROLES.index(have) >= ROLES.index(need)

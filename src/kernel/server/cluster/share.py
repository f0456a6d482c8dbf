"""Who does what among the live replicas (pure): rendezvous hashing, so each key (a server
id) has one owner, the shares are even, and a replica coming or going moves only its own
share."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def owner(key: int, replicas: Sequence[str]) -> str:
    """The replica of ``replicas`` that owns ``key`` (the highest hash of key and replica)."""
    if not replicas:
        raise ValueError("no replicas")
    return max(
        replicas, key=lambda r: hashlib.blake2b(f"{key}:{r}".encode(), digest_size=8).digest()
    )

"""Text and time as Kernel shows and stores them: one ISO-8601 formatter, one UTF-8 byte cap."""

from __future__ import annotations

import datetime as dt


def iso(value: dt.datetime | None) -> str | None:
    """A UTC datetime as ``2026-12-01T09:37:09.123456Z`` (None stays None)."""
    return value.isoformat().replace("+00:00", "Z") if value else None


def fit_utf8(text: str, room: int) -> tuple[str, int, bool]:
    """What of ``text`` fits in ``room`` UTF-8 bytes, cut between characters: (the part, its
    size in bytes, whether anything was cut). Output caps count bytes, as the agent does."""
    raw = text.encode("utf-8", "replace")
    if len(raw) <= room:
        return text, len(raw), False
    kept = raw[: max(room, 0)].decode("utf-8", "ignore")
    return kept, len(kept.encode("utf-8")), True


def printable(value: object, limit: int = 200) -> str:
    """A value as one safe line for a terminal: not-text as its repr, lone surrogates and
    control characters escaped, cut at ``limit`` characters."""
    text = value if isinstance(value, str) else repr(value)
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[:limit] + "…"

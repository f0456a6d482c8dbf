"""Text and time as Kernel shows and stores them: one ISO-8601 formatter, one UTF-8 byte cap."""

from __future__ import annotations

import datetime as dt


def iso(value: dt.datetime | None) -> str | None:
    """A UTC datetime as ``2026-12-01T09:37:09.123456Z`` (None stays None)."""
    return value.isoformat().replace("+00:00", "Z") if value else None


def cap_utf8(text: str, cap: int) -> tuple[str, bool]:
    """``text`` cut to at most ``cap`` UTF-8 bytes (never inside a character); (text, cut)."""
    raw = text.encode("utf-8", "replace")
    if len(raw) <= cap:
        return text, False
    return raw[: max(cap, 0)].decode("utf-8", "ignore"), True

"""The words of notifications (pure): an alert opening or resolving, a test, and a digest
when one round opens or resolves several alerts for the same channel (a partition that takes
50 servers offline is one message, not 50)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from kernel.server.alerts.rules import seconds

PREFIX = "[Kernel]"
TITLE_MAX = 250


@dataclass(frozen=True)
class Message:
    title: str
    body: str


@dataclass(frozen=True)
class AlertFacts:
    """What a message says about one alert."""

    id: int
    rule: str
    condition: str  # the rule in words (rules.describe)
    server: str | None
    subject: str
    summary: str
    since: float
    link: str | None = None  # the alert in the API (or console), when URL is set


def _at(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _where(a: AlertFacts) -> str:
    return f"{a.server}: {a.subject}" if a.server else a.subject


def opened(a: AlertFacts) -> Message:
    lines = [
        f"Problem: {a.summary}",
        f"Since: {_at(a.since)}",
        f"Rule: {a.rule} ({a.condition})",
        f"Alert #{a.id}" + (f": {a.link}" if a.link else ""),
    ]
    return Message(_fit(f"{PREFIX} PROBLEM {_where(a)}"), "\n".join(lines))


def resolved(a: AlertFacts, now: float, reason: str = "cleared") -> Message:
    why = "" if reason == "cleared" else f" ({reason})"
    lines = [
        f"Resolved{why} after {seconds(max(0.0, now - a.since))}. It was: {a.summary}",
        f"Began: {_at(a.since)}; resolved: {_at(now)}",
        f"Rule: {a.rule} ({a.condition})",
        f"Alert #{a.id}" + (f": {a.link}" if a.link else ""),
    ]
    return Message(_fit(f"{PREFIX} RESOLVED {_where(a)}"), "\n".join(lines))


def test(channel: str, by: str, now: float) -> Message:
    return Message(
        f"{PREFIX} test message",
        f"A test of the notification channel '{channel}', sent by {by} at {_at(now)}. "
        "If you read this, Kernel's alerts reach you here.",
    )


def digest(event: str, parts: Sequence[Message]) -> Message:
    """One message for several of the same event (open or resolve) sent to one channel."""
    if len(parts) == 1:
        return parts[0]
    word = "problems" if event == "open" else "problems resolved"
    names = ", ".join(p.title.split(" ", 2)[-1] for p in parts[:3])
    more = f" and {len(parts) - 3} more" if len(parts) > 3 else ""
    title = _fit(f"{PREFIX} {len(parts)} {word}: {names}{more}")
    return Message(title, "\n\n".join(f"{p.title}\n{p.body}" for p in parts))


def _fit(title: str) -> str:
    return title if len(title) <= TITLE_MAX else title[: TITLE_MAX - 1] + "…"

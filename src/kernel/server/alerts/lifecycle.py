"""An alert's life as a pure function: what one evaluation does to one (rule, server, subject)
given whether its problem is present now.

    (none) ──problem──▶ pending ──held `hold_open`──▶ open ──gone──▶ resolving
       ▲                  │ gone: dropped, never told      ▲            │ gone for `hold_resolve`
       └──────────────────┘                                └─problem────┤   (flapping: quiet)
                                                                        ▼
                                                                    resolved

People are told twice: when it opens and when it is resolved. A problem that comes and goes
faster than the hold times is told once (or not at all), never once per flap.
"""

from __future__ import annotations

from dataclasses import dataclass

# What to do with one key (the names are the database side's verbs: evaluate.py).
NOTHING = "nothing"
CREATE_PENDING = "create_pending"  # a new problem, held before it opens
CREATE_OPEN = "create_open"  # a new problem, open at once (tell)
OPEN = "open"  # pending long enough (tell)
UPDATE = "update"  # still there: refresh its summary and value
RESOLVING = "resolving"  # gone: hold before resolving
REOPEN = "reopen"  # back while resolving: open again, quietly
RESOLVE = "resolve"  # gone long enough (tell)
DROP = "drop"  # a pending problem that went away before it opened
TELLS = frozenset({CREATE_OPEN, OPEN, RESOLVE})


@dataclass(frozen=True)
class Current:
    """An alert that is not resolved, as the database holds it."""

    id: int
    state: str  # pending | open | resolving
    since: float  # when the problem began
    clear_since: float | None = None  # resolving: when it went away


def step(
    current: Current | None,
    present: bool,
    now: float,
    *,
    since: float | None = None,
    hold_open: float = 0.0,
    hold_resolve: float = 0.0,
) -> str:
    """The action for one key. ``since``: when a new problem began, if its condition knows
    (an offline host's last good probe); otherwise now."""
    if current is None:
        if not present:
            return NOTHING
        begun = now if since is None else min(since, now)
        return CREATE_OPEN if now - begun >= hold_open else CREATE_PENDING
    if current.state == "pending":
        if not present:
            return DROP
        return OPEN if now - current.since >= hold_open else UPDATE
    if current.state == "open":
        if present:
            return UPDATE
        return RESOLVE if hold_resolve <= 0 else RESOLVING
    if current.state == "resolving":
        if present:
            return REOPEN
        cleared = now if current.clear_since is None else current.clear_since
        return RESOLVE if now - cleared >= hold_resolve else NOTHING
    return NOTHING

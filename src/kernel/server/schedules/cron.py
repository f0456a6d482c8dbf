"""Cron expressions in a time zone, and which planned times are due (pure: no I/O, no clock).

An expression has the five classic fields (minute hour day-of-month month day-of-week, as in
crontab(5), evaluated by cronsim with Debian cron's day-of-month/day-of-week rule and its
daylight-saving handling) or is one of the @-names below. Every schedule names its time
zone (an IANA name such as Europe/Berlin); planned times are stored and compared in UTC.
"""

from __future__ import annotations

import datetime as dt
import functools
import zoneinfo
from collections.abc import Iterator
from dataclasses import dataclass

from cronsim import CronSim, CronSimError

from kernel.exceptions import InvalidInput

MAX_EXPRESSION = 255
COUNT_LIMIT = 100_000  # planned times counted at most, e.g. while the server was down
ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
FIELDS = "minute hour day-of-month month day-of-week"
_ALLOWED = frozenset("0123456789*,-/#LABCDEFGHIJKMNOPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz \t")
EXAMPLE = "e.g. '*/5 * * * *' or '0 3 * * 1-5'"


@dataclass(frozen=True)
class Cron:
    """A valid expression (as given, and as the five fields it means) in a valid zone."""

    expression: str
    fields: str
    zone: zoneinfo.ZoneInfo

    @property
    def timezone(self) -> str:
        return self.zone.key

    def times_after(self, t: dt.datetime) -> Iterator[dt.datetime]:
        """The planned times strictly after ``t`` (aware), in UTC, in order."""
        for local in CronSim(self.fields, t.astimezone(self.zone)):
            yield local.astimezone(dt.UTC)

    def after(self, t: dt.datetime) -> dt.datetime:
        """The first planned time strictly after ``t``."""
        return next(self.times_after(t))

    def upcoming(self, t: dt.datetime, count: int) -> list[dt.datetime]:
        """``t`` itself (a planned time) and the planned times after it: ``count`` in all."""
        out = [t]
        for nxt in self.times_after(t):
            if len(out) >= count:
                break
            out.append(nxt)
        return out[:count]

    def describe(self) -> str:
        """In English (cronsim's words), e.g. "At 03:00 on Monday through Friday"."""
        try:
            return str(CronSim(self.fields, dt.datetime.now(dt.UTC)).explain())
        except Exception:  # noqa: BLE001 - a description is a nicety, never an error
            return ""


def parse(expression: object, timezone: object) -> Cron:
    """A `Cron`, or InvalidInput saying what is wrong with the expression or the zone."""
    zone = parse_zone(timezone)
    if not isinstance(expression, str):
        raise InvalidInput("'cron' must be a string")
    text = " ".join(expression.split())
    shown = repr(expression[:80])
    if not text:
        raise InvalidInput(f"'cron' must not be empty ({FIELDS}; {EXAMPLE})")
    if len(expression) > MAX_EXPRESSION:
        raise InvalidInput(f"'cron' must be at most {MAX_EXPRESSION} characters")
    if text.startswith("@"):
        fields = ALIASES.get(text.lower())
        if fields is None:
            raise InvalidInput(
                f"cron expression {shown} is not valid: known names are {', '.join(ALIASES)}"
            )
    else:
        fields = text
        if any(c not in _ALLOWED for c in text):
            raise InvalidInput(
                f"cron expression {shown} is not valid: it may hold only digits, letters "
                f"(month and day names, L), '*', ',', '-', '/', '#' ({FIELDS}; {EXAMPLE})"
            )
        if len(text.split()) != 5:
            raise InvalidInput(
                f"cron expression {shown} is not valid: it needs 5 fields ({FIELDS}), it has "
                f"{len(text.split())} ({EXAMPLE})"
            )
    try:
        first = next(CronSim(fields, dt.datetime(2000, 1, 1, tzinfo=dt.UTC)), None)
    except CronSimError as e:
        why = str(e).lower() or "it cannot be read"
        raise InvalidInput(
            f"cron expression {shown} is not valid: {why} field ({FIELDS}; {EXAMPLE})"
        ) from None
    except (ValueError, IndexError, OverflowError):  # cronsim's own limits, e.g. 5#9
        raise InvalidInput(f"cron expression {shown} is not valid ({FIELDS}; {EXAMPLE})") from None
    if first is None:
        raise InvalidInput(f"cron expression {shown} never fires")
    return Cron(expression=text, fields=fields, zone=zone)


def parse_zone(name: object) -> zoneinfo.ZoneInfo:
    if not isinstance(name, str) or not name:
        raise InvalidInput("'timezone' must be a time zone name such as Europe/Berlin or UTC")
    if name not in known_zones():
        raise InvalidInput(
            f"unknown time zone {name[:80]!r}: use an IANA name such as Europe/Berlin, "
            "Asia/Shanghai, America/New_York or UTC"
        )
    return zoneinfo.ZoneInfo(name)


@functools.cache
def known_zones() -> frozenset[str]:
    # Looked up in the IANA list, never opened by name: a name is a path under the zone
    # directory to zoneinfo, and only real zones may be stored.
    return frozenset(zoneinfo.available_timezones() | {"UTC"})


@dataclass(frozen=True)
class Due:
    """What is due at ``now`` of a schedule whose next unclaimed planned time is ``first``:
    ``on_time``, the planned time to fire now (None if there is none within the grace);
    ``missed``, how many planned times before it passed unfired (``missed_first`` and
    ``missed_last`` bound them; ``missed_more``: the count stopped at COUNT_LIMIT); and
    ``next_at``, the first planned time after ``now``."""

    on_time: dt.datetime | None
    missed: int
    missed_first: dt.datetime | None
    missed_last: dt.datetime | None
    missed_more: bool
    next_at: dt.datetime


def due(cron: Cron, first: dt.datetime, now: dt.datetime, grace: float) -> Due:
    """Which of the planned times from ``first`` up to ``now`` fire. The latest of them
    fires if it is at most ``grace`` seconds old; the ones before it (and it, when older)
    were missed — the server was not running, or was stopped, when they came. Past
    COUNT_LIMIT planned times counting stops and all of them count as missed."""
    if first > now:
        return Due(None, 0, None, None, False, first)
    count, prev, last, more = 1, None, first, False
    for t in cron.times_after(first):
        if t > now:
            break
        if count >= COUNT_LIMIT:
            more = True
            break
        count, prev, last = count + 1, last, t
    if not more and (now - last).total_seconds() <= grace:
        return Due(
            on_time=last,
            missed=count - 1,
            missed_first=first if prev is not None else None,
            missed_last=prev,
            missed_more=False,
            next_at=cron.after(last),
        )
    return Due(
        on_time=None,
        missed=count,
        missed_first=first,
        missed_last=last,
        missed_more=more,
        next_at=cron.after(now if more else last),
    )

"""Tables and the small formats in them (ages, sizes, durations) for the read commands."""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Callable, Sequence

from .output import Style

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def visible_len(text: str) -> int:
    return len(ANSI.sub("", text))


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[object]],
    style: Style,
    *,
    paint: dict[int, Callable[[str], str]] | None = None,
    width: int | None = None,
) -> str:
    """Aligned columns, header in bold; ``paint[i]`` colours column i's cells (after padding,
    so colours do not shift the columns); on a terminal the last column is cut to fit."""
    cells = [["" if c is None else str(c).replace("\n", " ") for c in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    if width is None and style.enabled:
        try:
            width = os.get_terminal_size().columns
        except OSError:
            width = None
    if width:
        used = sum(widths[:-1]) + 2 * (len(widths) - 1)
        widths[-1] = max(len(headers[-1]), min(widths[-1], width - used))
    paint = paint or {}

    def line(values: Sequence[str], header: bool = False) -> str:
        out = []
        for i, (v, w) in enumerate(zip(values, widths, strict=True)):
            if len(v) > w:
                v = v[: max(w - 1, 0)] + "…"
            last = i == len(values) - 1
            padded = v if last else v.ljust(w)
            if header:
                padded = style.bold(padded)
            elif i in paint and v:
                padded = paint[i](v) + ("" if last else " " * (w - len(v)))
            out.append(padded)
        return "  ".join(out).rstrip()

    return "\n".join([line(list(headers), header=True), *(line(r) for r in cells)])


def parse_time(value: object) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def ago(value: object, now: dt.datetime | None = None) -> str:
    """``12 s ago``, ``5 min ago``, ``3 h ago``, ``2 d ago``; ``-`` for none."""
    t = parse_time(value)
    if t is None:
        return "-"
    secs = ((now or dt.datetime.now(dt.UTC)) - t).total_seconds()
    if secs < 1:
        return "just now"
    return duration(secs) + " ago"


def until(value: object, now: dt.datetime | None = None) -> str:
    """``in 12 s``, ``in 5 min``, …; ``now`` when it has come; ``-`` for none."""
    t = parse_time(value)
    if t is None:
        return "-"
    secs = (t - (now or dt.datetime.now(dt.UTC))).total_seconds()
    return "now" if secs < 1 else "in " + duration(secs)


def duration(seconds: object) -> str:
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        return "-"
    s = float(seconds)
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 90:
        return f"{s:.1f} s" if s < 10 else f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    if s < 2 * 86400:
        return f"{s / 3600:.0f} h"
    return f"{s / 86400:.0f} d"


def size(n: object) -> str:
    if not isinstance(n, int | float) or isinstance(n, bool):
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return "-"


def percent(used: object, total: object) -> str:
    if not isinstance(used, int | float) or not isinstance(total, int | float) or not total:
        return "-"
    return f"{100 * used / total:.0f}%"


def when(value: object) -> str:
    """An ISO time as local ``YYYY-MM-DD HH:MM:SS``."""
    t = parse_time(value)
    return t.astimezone().strftime("%Y-%m-%d %H:%M:%S") if t else "-"

"""Shared by the benchmarks: print a table and store it in docs/benchmarks.md.

Each benchmark owns one section of docs/benchmarks.md, delimited by HTML comments
``<!-- bench:NAME -->`` … ``<!-- /bench:NAME -->``; rerunning replaces only that section.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
from collections.abc import Sequence
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = "# Benchmarks\n\nFigures written by the scripts in `bench/` (`scripts/bench`).\n"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table; also readable as plain text."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]

    def line(vals: Sequence[str]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), sep, *(line(r) for r in cells)])


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def write_section(name: str, title: str, body: str) -> None:
    """Replace (or append) section NAME of docs/benchmarks.md and print it."""
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    block = (
        f"<!-- bench:{name} -->\n## {title}\n\n_Measured {stamp} on {machine()}._\n\n"
        f"{body.strip()}\n<!-- /bench:{name} -->"
    )
    print(block)
    text = DOC.read_text() if DOC.exists() else HEADER
    pattern = re.compile(
        rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->", re.S
    )
    text = (
        pattern.sub(lambda _m: block, text)
        if pattern.search(text)
        else text.rstrip() + "\n\n" + block + "\n"
    )
    DOC.write_text(text)

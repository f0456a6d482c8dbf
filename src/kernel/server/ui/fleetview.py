"""The fleet as the dashboard shows it (pure): each server's row from the status queries made
into what a card or a table row needs, the filters, and the counts per state."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from kernel.server.status.brief import brief

CARDS_UP_TO = 24  # more servers than this are shown as a dense table
STATES = ("online", "offline", "pending", "init_failed", "unknown")


@dataclass(frozen=True)
class Filters:
    text: str = ""
    state: str = ""
    tag: str = ""
    view: str = ""  # "cards" | "table" | "" (by count)

    @classmethod
    def of(cls, args: Any) -> Filters:
        state = args.get("state", "")
        view = args.get("view", "")
        return cls(
            text=args.get("q", "")[:200].strip(),
            state=state if state in STATES else "",
            tag=args.get("tag", "")[:64],
            view=view if view in ("cards", "table") else "",
        )

    def keeps(self, host: dict[str, Any]) -> bool:
        if self.state and host["state"] != self.state:
            return False
        if self.tag and self.tag not in host["tags"]:
            return False
        if self.text:
            needle = self.text.lower()
            hay = " ".join(
                [host["server"], host["address"], host["os"], host["description"], *host["tags"]]
            ).lower()
            if needle not in hay:
                return False
        return True


def address(agent_url: str | None) -> str:
    if not agent_url:
        return ""
    try:
        return urlsplit(agent_url).hostname or agent_url
    except ValueError:
        return agent_url


def hosts(rows: Iterable[dict[str, Any]], units: dict[str, str]) -> list[dict[str, Any]]:
    """Dashboard entries: the brief (status/brief.py) plus what a card shows. ``units`` maps
    each catalogue service with a unit to that unit."""
    watched = sorted(set(units.values()))
    out = []
    for r in rows:
        b = brief(
            r["id"], r["name"], r["state"], r["health"] or "unknown", r["units"], r["metrics"],
            watched,
        )  # fmt: skip
        facts = r["facts"] or r["server_facts"] or {}
        b.update(
            address=address(r["agent_url"]),
            os=str(facts.get("os_name") or facts.get("os") or ""),
            tags=list(r["tags"] or []),
            description=r["description"] or "",
            services=[
                (name, unit, b["units"].get(unit, "missing")) for name, unit in units.items()
            ],
            error=r["probe_error"] if b["state"] == "offline" else r["last_error"],
        )
        out.append(b)
    return out


def counts(entries: Iterable[dict[str, Any]]) -> dict[str, int]:
    c = Counter(e["state"] for e in entries)
    return {s: c.get(s, 0) for s in STATES}


def tags(entries: Iterable[dict[str, Any]]) -> list[str]:
    return sorted({t for e in entries for t in e["tags"]})


def view_for(filters: Filters, shown: int) -> str:
    return filters.view or ("cards" if shown <= CARDS_UP_TO else "table")

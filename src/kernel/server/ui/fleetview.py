"""The fleet as the dashboard shows it (pure): each server's row from the status queries made
into what a card or a table row needs, the filters, and the counts per state."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from kernel.server.status.brief import brief, display_state

CARDS_UP_TO = 24  # more servers than this are shown as a dense table
STATES = ("online", "offline", "pending", "init_failed", "unknown")


@dataclass(frozen=True)
class Filters:
    text: str = ""
    state: str = ""
    tag: str = ""
    view: str = ""  # "cards" | "table" | "" (by count)
    page: int = 1

    @classmethod
    def of(cls, args: Any) -> Filters:
        state = args.get("state", "")
        view = args.get("view", "")
        page = str(args.get("page", ""))
        return cls(
            text=args.get("q", "")[:200].strip(),
            state=state if state in STATES else "",
            tag=args.get("tag", "")[:64],
            view=view if view in ("cards", "table") else "",
            page=int(page) if page.isdigit() and 0 < len(page) < 7 and int(page) > 0 else 1,
        )

    def query(self, page: int) -> str:
        """The URL query of these filters at another page."""
        args = {"q": self.text, "state": self.state, "tag": self.tag, "view": self.view}
        kept = {k: v for k, v in args.items() if v}
        if page > 1:
            kept["page"] = str(page)
        return urlencode(kept)

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


def index(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the filters and counts need of every server (status/queries.py `fleet_index`
    rows): the display state, name, address, OS, description and tags."""
    return [
        {
            "server_id": r["id"],
            "server": r["name"],
            "state": display_state(r["state"], r["health"] or "unknown"),
            "address": address(r["agent_url"]),
            "os": str(r["os"] or ""),
            "description": r["description"] or "",
            "tags": list(r["tags"] or []),
        }
        for r in rows
    ]


@dataclass(frozen=True)
class Page:
    """One page of the servers the filters keep: which, and where it is among them."""

    ids: list[int]
    number: int  # 1-based, within 1..pages
    pages: int
    first: int  # 1-based position of its first server among those kept (0: none)
    last: int
    kept: int


def page_of(kept: list[dict[str, Any]], number: int, size: int) -> Page:
    pages = max(1, -(-len(kept) // size))
    number = min(max(number, 1), pages)
    start = (number - 1) * size
    chosen = kept[start : start + size]
    return Page(
        ids=[e["server_id"] for e in chosen],
        number=number,
        pages=pages,
        first=start + 1 if chosen else 0,
        last=start + len(chosen),
        kept=len(kept),
    )


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

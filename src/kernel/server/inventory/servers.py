"""Servers in the inventory: finding them, their unique live names, and pinning an https
agent's certificate."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import String, cast, func, select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from kernel.agent_client import AgentError, fetch_tls_fingerprint, normalize_fingerprint
from kernel.exceptions import AgentFailed, Conflict, InvalidInput, NotFound
from kernel.server.core.paging import decode_cursor, encode_cursor
from kernel.server.inventory.schemas import ServerList
from kernel.server.models.servers import Server, name_key


def get_server(s: Session, server_id: int, *, live: bool = True) -> Server:
    srv = s.get(Server, server_id)
    if srv is None or (live and srv.removed_at is not None):
        raise NotFound(f"no server {server_id}")
    return srv


def name_taken(s: Session, name: str, but: int | None = None) -> bool:
    """Is a live server called ``name`` — whatever the case and trailing dots?"""
    q = select(Server.id).where(Server.name_key == name_key(name), Server.removed_at.is_(None))
    if but is not None:
        q = q.where(Server.id != but)
    return s.scalars(q).first() is not None


def commit_or_conflict(s: Session, name: str) -> None:
    try:
        s.commit()
    except IntegrityError:
        s.rollback()
        raise Conflict(f"a server named {name!r} exists") from None


def pin_for(url: str, given: object, timeout: float) -> str | None:
    """The TLS certificate fingerprint to pin for an https agent: the one given, else the one
    it presents now (trust on first use, like SSH host keys). None for http."""
    if not url.startswith("https://"):
        if given is not None:
            raise InvalidInput("'tls_fingerprint' only applies to https:// agent URLs")
        return None
    if given is not None:
        if not isinstance(given, str):
            raise InvalidInput("'tls_fingerprint' must be a string")
        try:
            return normalize_fingerprint(given)
        except ValueError:
            raise InvalidInput("'tls_fingerprint' must be a SHA-256 fingerprint (64 hex)") from None
    try:
        return fetch_tls_fingerprint(url, timeout=timeout)
    except AgentError as e:
        raise AgentFailed(f"could not fetch the TLS certificate of {url}: {e}") from None


def page(s: Session, query: ServerList) -> tuple[Sequence[Server], int, str | None]:
    """One page of the server list (name order, filters in SQL): the servers, how many match
    in all, and the cursor of the next page (None on the last)."""
    q = select(Server)
    if not query.removed:
        q = q.where(Server.removed_at.is_(None))
    if query.state:
        q = q.where(Server.state == query.state)
    if query.tag:
        # Tags are names (no quotes, no backslashes), so the quoted tag in the JSON text is
        # that tag exactly, on SQLite and PostgreSQL alike.
        q = q.where(cast(Server.tags, String).like(f'%"{query.tag}"%'))
    if query.q:
        q = q.where(Server.name_key.contains(query.q.lower(), autoescape=True))
    total = s.scalar(select(func.count()).select_from(q.subquery())) or 0
    if query.after:
        name, id_ = decode_cursor(query.after)
        q = q.where(tuple_(Server.name, Server.id) > tuple_(name, id_))
    rows = s.scalars(q.order_by(Server.name, Server.id).limit(query.limit + 1)).all()
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    return rows, total, encode_cursor(rows[-1].name, rows[-1].id) if more else None

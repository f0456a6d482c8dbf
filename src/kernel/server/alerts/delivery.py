"""Delivering the outbox (alert_notifications): claim what is due, send it, record the
attempt. Each attempt is a row in alert_deliveries (sent, or failed with the error); a failed
one is retried with a doubling delay up to ALERTS_SEND_ATTEMPTS, then stays "failed" — the
alert itself is never lost, and a channel that is down is a recorded failure, not an error.

A claim is a compare-and-set (queued → sending), so replicas never send one notification
twice; a claim left behind by a process that died is taken again after `STALE`. The messages
of one round for one channel go out as one (messages.digest)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from kernel.server.alerts import messages
from kernel.server.alerts.channels import Sent
from kernel.server.core.db import Database
from kernel.server.models.alerts import AlertChannel, AlertDelivery, AlertNotification

STALE = dt.timedelta(minutes=10)  # a claim this old belongs to a process that died
BATCH = 200  # notifications claimed at once
MAX_DELAY = 3600.0


@dataclass(frozen=True)
class Group:
    """Notifications that go out as one message."""

    ids: tuple[int, ...]
    channel: str
    url: str
    event: str
    message: messages.Message


def claim(db: Database, now: dt.datetime) -> list[Group]:
    with db.session() as s:
        s.execute(
            update(AlertNotification)
            .where(AlertNotification.state == "sending", AlertNotification.claimed_at < now - STALE)
            .values(state="queued")
        )
        due = s.scalars(
            select(AlertNotification)
            .where(AlertNotification.state == "queued", AlertNotification.next_at <= now)
            .order_by(AlertNotification.id)
            .limit(BATCH)
        ).all()
        mine: list[AlertNotification] = []
        for n in due:
            res = s.execute(
                update(AlertNotification)
                .where(AlertNotification.id == n.id, AlertNotification.state == "queued")
                .values(state="sending", claimed_at=now)
                .execution_options(synchronize_session=False)
            )
            if res.rowcount:  # type: ignore[attr-defined]
                mine.append(n)
        ids = {n.channel_id for n in mine if n.channel_id is not None}
        chans = {c.id: c for c in s.scalars(select(AlertChannel).where(AlertChannel.id.in_(ids)))}
        groups: dict[tuple[int, str, str], list[AlertNotification]] = {}
        for n in mine:
            ch = chans.get(n.channel_id) if n.channel_id is not None else None
            if ch is None or not ch.enabled:
                why = "the channel was removed" if ch is None else "the channel is disabled"
                _finish(s, [n.id], "cancelled", why, now)
                continue
            batch = n.batch or f"n{n.id}"
            groups.setdefault((ch.id, batch, n.event), []).append(n)
        out = []
        for (cid, _batch, event), rows in groups.items():
            rows.sort(key=lambda r: (r.title, r.id))
            parts = [messages.Message(r.title, r.body) for r in rows]
            out.append(
                Group(tuple(r.id for r in rows), chans[cid].name, chans[cid].url, event,
                      messages.digest(event, parts))
            )  # fmt: skip
        return out


def record(
    db: Database,
    ids: Sequence[int],
    sent: Sent,
    now: dt.datetime,
    *,
    attempts: int,
    retry_after: float,
) -> None:
    """Record one attempt for these notifications: sent, retried later, or failed for good."""
    with db.session() as s:
        record_in(s, ids, sent, now, attempts=attempts, retry_after=retry_after)


def record_in(
    s: Session,
    ids: Sequence[int],
    sent: Sent,
    now: dt.datetime,
    *,
    attempts: int,
    retry_after: float,
) -> None:
    for n in s.scalars(select(AlertNotification).where(AlertNotification.id.in_(list(ids)))):
        s.add(AlertDelivery(notification_id=n.id, at=now, ok=sent.ok, error=sent.error,
                            duration=sent.duration))  # fmt: skip
        n.attempts += 1
        n.claimed_at = None
        if sent.ok:
            n.state, n.done_at, n.last_error = "sent", now, None
        elif n.attempts >= attempts:
            n.state, n.done_at, n.last_error = "failed", now, sent.error
        else:
            n.state, n.last_error = "queued", sent.error
            delay = min(MAX_DELAY, retry_after * 2 ** (n.attempts - 1))
            n.next_at = now + dt.timedelta(seconds=delay)


def _finish(s: Session, ids: Sequence[int], state: str, why: str, now: dt.datetime) -> None:
    s.execute(
        update(AlertNotification)
        .where(AlertNotification.id.in_(list(ids)))
        .values(state=state, last_error=why, done_at=now, claimed_at=None)
        .execution_options(synchronize_session=False)
    )

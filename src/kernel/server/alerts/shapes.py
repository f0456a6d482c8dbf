"""Rules, channels, alerts and notifications as the API answers them (schemas.py declares
the shapes)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from kernel.server.alerts.channels import masked
from kernel.server.alerts.rules import describe
from kernel.server.core.text import iso
from kernel.server.models.alerts import (
    Alert,
    AlertChannel,
    AlertDelivery,
    AlertNotification,
    AlertRule,
)


def rule_json(r: AlertRule) -> dict[str, Any]:
    return {
        "id": r.id,
        "name": r.name,
        "kind": r.kind,
        "condition": describe(r.kind, r.params or {}),
        "params": dict(r.params or {}),
        "tags": list(r.tags or []),
        "channels": None if r.channels is None else list(r.channels),
        "hold_open": r.hold_open,
        "hold_resolve": r.hold_resolve,
        "enabled": r.enabled,
        "created_by": r.created_by,
        "created_at": iso(r.created_at),
        "updated_at": iso(r.updated_at),
    }


def channel_json(c: AlertChannel, last: AlertDelivery | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": c.id,
        "name": c.name,
        "service": c.service,
        "url": masked(c.url),
        "enabled": c.enabled,
        "created_by": c.created_by,
        "created_at": iso(c.created_at),
        "last_delivery": None,
    }
    if last is not None:
        out["last_delivery"] = {"at": iso(last.at), "ok": last.ok, "error": last.error}
    return out


def alert_json(a: Alert) -> dict[str, Any]:
    return {
        "id": a.id,
        "rule_id": a.rule_id,
        "rule": a.rule_name,
        "kind": a.kind,
        "server_id": a.server_id,
        "server": a.server_name,
        "subject": a.subject,
        "state": a.state,
        "summary": a.summary,
        "value": a.value,
        "detail": dict(a.detail or {}),
        "since": iso(a.since),
        "opened_at": iso(a.opened_at),
        "clear_since": iso(a.clear_since),
        "resolved_at": iso(a.resolved_at),
        "resolution": a.resolution,
        "last_seen_at": iso(a.last_seen_at),
    }


def notification_json(
    n: AlertNotification, deliveries: Sequence[AlertDelivery] = ()
) -> dict[str, Any]:
    return {
        "id": n.id,
        "alert_id": n.alert_id,
        "channel_id": n.channel_id,
        "channel": n.channel_name,
        "event": n.event,
        "title": n.title,
        "state": n.state,
        "attempts": n.attempts,
        "last_error": n.last_error,
        "created_at": iso(n.created_at),
        "next_at": iso(n.next_at) if n.state == "queued" else None,
        "done_at": iso(n.done_at),
        "deliveries": [
            {"at": iso(d.at), "ok": d.ok, "error": d.error, "duration": d.duration}
            for d in deliveries
        ],
    }


def notifications_json(s: Session, rows: Iterable[AlertNotification]) -> list[dict[str, Any]]:
    """Notifications with their delivery attempts (one query for the attempts)."""
    rows = list(rows)
    attempts: dict[int, list[AlertDelivery]] = {}
    if rows:
        for d in s.scalars(
            select(AlertDelivery)
            .where(AlertDelivery.notification_id.in_([n.id for n in rows]))
            .order_by(AlertDelivery.id)
        ):
            attempts.setdefault(d.notification_id, []).append(d)
    return [notification_json(n, attempts.get(n.id, ())) for n in rows]


def last_deliveries(s: Session, channel_ids: Sequence[int]) -> Mapping[int, AlertDelivery]:
    """Each channel's latest delivery attempt."""
    out: dict[int, AlertDelivery] = {}
    if not channel_ids:
        return out
    rows = s.execute(
        select(AlertNotification.channel_id, AlertDelivery)
        .join(AlertDelivery, AlertDelivery.notification_id == AlertNotification.id)
        .where(AlertNotification.channel_id.in_(list(channel_ids)))
        .order_by(AlertDelivery.id.desc())
        .limit(50 * len(channel_ids))
    ).all()
    for cid, d in rows:
        if cid is not None and cid not in out:
            out[cid] = d
    return out

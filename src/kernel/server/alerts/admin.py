"""Setting alerts up (no Flask): rules and channels created, edited and removed, and a test
message sent now. Each checks what it is given and raises kernel.exceptions kinds."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from kernel.exceptions import Conflict, InvalidInput, NotFound
from kernel.server.alerts import channels, delivery, messages
from kernel.server.alerts.evaluate import close_for_rule
from kernel.server.alerts.rules import params_for
from kernel.server.alerts.schemas import ChannelCreate, ChannelEdit, RuleCreate, RuleEdit
from kernel.server.core.db import Database, utcnow
from kernel.server.models.alerts import AlertChannel, AlertNotification, AlertRule


def get_rule(s: Session, rule_id: int) -> AlertRule:
    rule = s.get(AlertRule, rule_id)
    if rule is None:
        raise NotFound(f"no alert rule {rule_id}")
    return rule


def get_channel(s: Session, channel_id: int) -> AlertChannel:
    ch = s.get(AlertChannel, channel_id)
    if ch is None:
        raise NotFound(f"no alert channel {channel_id}")
    return ch


def _check_channels(s: Session, ids: Sequence[int] | None) -> list[int] | None:
    if ids is None:
        return None
    wanted = sorted(set(ids))
    found = set(s.scalars(select(AlertChannel.id).where(AlertChannel.id.in_(wanted))))
    missing = [i for i in wanted if i not in found]
    if missing:
        raise InvalidInput(f"no such alert channel(s): {', '.join(map(str, missing[:20]))}")
    return wanted


def _commit(s: Session, what: str, name: str) -> None:
    try:
        s.commit()
    except IntegrityError:
        s.rollback()
        raise Conflict(f"an alert {what} named {name!r} exists") from None


def create_rule(s: Session, body: RuleCreate, actor: str) -> AlertRule:
    params = params_for(body.kind, body.given())
    if s.scalars(select(AlertRule.id).where(AlertRule.name == body.name)).first() is not None:
        raise Conflict(f"an alert rule named {body.name!r} exists")
    now = utcnow()
    rule = AlertRule(
        name=body.name, kind=body.kind, params=params, tags=sorted(set(body.tags)),
        channels=_check_channels(s, body.channels), hold_open=body.hold_open,
        hold_resolve=body.hold_resolve, enabled=body.enabled, created_by=actor,
        created_at=now, updated_at=now,
    )  # fmt: skip
    s.add(rule)
    s.flush()
    _commit(s, "rule", body.name)
    return rule


def edit_rule(s: Session, rule: AlertRule, body: RuleEdit) -> AlertRule:
    given = body.given()
    if given:
        rule.params = params_for(rule.kind, given, base=rule.params)
    if body.name is not None and body.name != rule.name:
        taken = s.scalars(select(AlertRule.id).where(AlertRule.name == body.name)).first()
        if taken is not None:
            raise Conflict(f"an alert rule named {body.name!r} exists")
        rule.name = body.name
    if body.all_channels and body.channels is not None:
        raise InvalidInput("give 'channels' or 'all_channels', not both")
    if body.all_channels:
        rule.channels = None
    elif body.channels is not None:
        rule.channels = _check_channels(s, body.channels)
    if body.tags is not None:
        rule.tags = sorted(set(body.tags))
    if body.hold_open is not None:
        rule.hold_open = body.hold_open
    if body.hold_resolve is not None:
        rule.hold_resolve = body.hold_resolve
    now = utcnow()
    if body.enabled is not None:
        if rule.enabled and not body.enabled:
            close_for_rule(s, rule.id, "rule disabled", now)
        rule.enabled = body.enabled
    rule.updated_at = now
    _commit(s, "rule", rule.name)
    return rule


def remove_rule(s: Session, rule: AlertRule) -> None:
    """Its alerts stay in the history (resolved "rule removed"), its rule id cleared."""
    close_for_rule(s, rule.id, "rule removed", utcnow())
    s.delete(rule)
    s.commit()


def create_channel(s: Session, body: ChannelCreate, actor: str) -> AlertChannel:
    service = channels.check_url(body.url)
    if s.scalars(select(AlertChannel.id).where(AlertChannel.name == body.name)).first():
        raise Conflict(f"an alert channel named {body.name!r} exists")
    ch = AlertChannel(
        name=body.name, url=body.url.strip(), service=service, enabled=body.enabled,
        created_by=actor, created_at=utcnow(),
    )  # fmt: skip
    s.add(ch)
    s.flush()
    _commit(s, "channel", body.name)
    return ch


def edit_channel(s: Session, ch: AlertChannel, body: ChannelEdit) -> AlertChannel:
    if body.url is not None:
        ch.service = channels.check_url(body.url)
        ch.url = body.url.strip()
    if body.name is not None and body.name != ch.name:
        if s.scalars(select(AlertChannel.id).where(AlertChannel.name == body.name)).first():
            raise Conflict(f"an alert channel named {body.name!r} exists")
        ch.name = body.name
    if body.enabled is not None:
        ch.enabled = body.enabled
    _commit(s, "channel", ch.name)
    return ch


def remove_channel(s: Session, ch: AlertChannel) -> None:
    """What was owed to it is cancelled; rules that name it forget it."""
    now = utcnow()
    s.execute(
        update(AlertNotification)
        .where(AlertNotification.channel_id == ch.id, AlertNotification.state == "queued")
        .values(state="cancelled", last_error="the channel was removed", done_at=now)
    )
    for rule in s.scalars(select(AlertRule)):
        if rule.channels and ch.id in rule.channels:
            rule.channels = [c for c in rule.channels if c != ch.id]
    s.delete(ch)
    s.commit()


def send_test(
    db: Database, channel_id: int, actor: str, timeout: float
) -> tuple[AlertNotification, channels.Sent]:
    """Send a test message to a channel now and record it like any notification (one
    attempt: a test is not retried)."""
    now = utcnow()
    with db.session() as s:
        ch = get_channel(s, channel_id)
        msg = messages.test(ch.name, actor, now.timestamp())
        n = AlertNotification(
            alert_id=None, channel_id=ch.id, channel_name=ch.name, event="test",
            batch=uuid.uuid4().hex, title=msg.title, body=msg.body, state="sending",
            attempts=0, next_at=now, claimed_at=now, created_at=now,
        )  # fmt: skip
        s.add(n)
        s.flush()
        url = ch.url
    # No transaction held while the message goes out (it may take `timeout` seconds).
    sent = channels.send(url, msg.title, msg.body, "test", timeout)
    delivery.record(db, [n.id], sent, dt.datetime.now(dt.UTC), attempts=1, retry_after=0)
    with db.reading() as s:
        found = s.get(AlertNotification, n.id)
        assert found is not None
        return found, sent

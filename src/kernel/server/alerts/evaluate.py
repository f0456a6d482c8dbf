"""One evaluation round: read the state (snapshot.py), judge every enabled rule
(conditions.py), decide each alert's step (lifecycle.py), and write the steps.

Idempotent, so several evaluators (replicas sharing one PostgreSQL) may run at once: every
step is a compare-and-set on the alert's state (``UPDATE … WHERE id = ? AND state = ?``), a
new alert is an INSERT under the partial unique index on its key (a second evaluator's insert
of the same key fails and is skipped), and the messages an opening or resolving owes are
queued in the same transaction as the step that won — so each is queued exactly once."""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from kernel.server.alerts import conditions as cond
from kernel.server.alerts import lifecycle as lc
from kernel.server.alerts import messages
from kernel.server.alerts.rules import describe
from kernel.server.alerts.snapshot import Live, Rule, Snapshot, read
from kernel.server.core.db import Database
from kernel.server.models.alerts import (
    Alert,
    AlertChannel,
    AlertNotification,
    AlertRule,
    AlertUnitSeen,
)


def key_of(rule_id: int, server_id: int | None, subject: str) -> str:
    raw = f"{rule_id}\n{'' if server_id is None else server_id}\n{subject}"
    return hashlib.sha256(raw.encode("utf-8", "replace")).hexdigest()


@dataclass(frozen=True)
class Change:
    action: str
    key: str
    rule: Rule
    problem: cond.Problem | None  # None: the problem is gone
    live: Live | None  # the alert as read (None: a new one)


def verdict(rule: Rule, snap: Snapshot, units: Mapping[str, str], max_gap: float) -> cond.Verdict:
    """What ``rule`` sees in ``snap``."""
    p = rule.params
    hosts = [h for h in snap.hosts.values() if cond.in_scope(h.tags, rule.tags)]
    if rule.kind == "offline":
        return cond.offline(hosts, float(p["seconds"]), snap.now)
    if rule.kind == "service":
        return cond.services(hosts, units, snap.seen_active, p.get("services") or ())
    if rule.kind == "disk":
        return cond.disks(hosts, float(p["percent"]), p.get("mounts") or ())
    if rule.kind == "load":
        metric = str(p.get("metric", "load1"))
        return cond.load(hosts, snap.series.get(metric, {}), float(p["above"]),
                         float(p["minutes"]), metric, snap.now, max_gap)  # fmt: skip
    if rule.kind == "job":
        since = max(snap.now - float(p["window"]), rule.created_at)
        runs = [r for r in snap.runs if r.finished_at >= since]
        return cond.jobs(runs, snap.parents, snap.hosts, rule.tags, p.get("kinds") or ())
    return cond.Verdict()


def plan(snap: Snapshot, units: Mapping[str, str], max_gap: float) -> list[Change]:
    """Every step this round takes (pure: no database)."""
    changes: list[Change] = []
    by_rule: dict[int, dict[str, Live]] = {}
    for key, found in snap.live.items():
        if found.rule_id is not None:
            by_rule.setdefault(found.rule_id, {})[key] = found
    for rule in snap.rules:
        v = verdict(rule, snap, units, max_gap)
        present = {key_of(rule.id, p.server_id, p.subject): p for p in v.problems}
        # An offline rule's "for more than N seconds" is its wait before opening.
        wait = float(rule.params["seconds"]) if rule.kind == "offline" else 0.0
        hold_open = rule.hold_open + wait
        mine = by_rule.get(rule.id, {})
        for key in sorted(set(mine) | set(present)):
            lv, problem = mine.get(key), present.get(key)
            if problem is None and lv is not None and lv.server_id in v.unknown:
                continue  # cannot be judged now: leave it as it is
            action = lc.step(
                lv.current if lv else None,
                problem is not None,
                snap.now,
                since=problem.since if problem else None,
                hold_open=hold_open,
                hold_resolve=rule.hold_resolve,
            )
            if action != lc.NOTHING:
                changes.append(Change(action, key, rule, problem, lv))
    return changes


@dataclass
class Outbox:
    """Queues the messages of the steps that won, in their transaction."""

    s: Session
    now: dt.datetime
    link: Callable[[int], str | None]
    batch: str
    channels: dict[int, str]  # enabled channels: id → name
    queued: int = 0

    def tell(self, event: str, alert: Alert, rule: Rule, reason: str = "cleared") -> None:
        ids = list(self.channels) if rule.channels is None else [
            c for c in rule.channels if c in self.channels
        ]  # fmt: skip
        if not ids:
            return
        facts = facts_of(alert, describe(rule.kind, rule.params), self.link(alert.id))
        msg = (
            messages.opened(facts)
            if event == "open"
            else messages.resolved(facts, self.now.timestamp(), reason)
        )
        for cid in ids:
            self.s.add(
                AlertNotification(
                    alert_id=alert.id, channel_id=cid, channel_name=self.channels[cid],
                    event=event, batch=self.batch, title=msg.title, body=msg.body,
                    state="queued", attempts=0, next_at=self.now, created_at=self.now,
                )
            )  # fmt: skip
            self.queued += 1


def facts_of(alert: Alert, condition: str, link: str | None) -> messages.AlertFacts:
    return messages.AlertFacts(
        id=alert.id,
        rule=alert.rule_name,
        condition=condition,
        server=alert.server_name,
        subject=alert.subject,
        summary=alert.summary,
        since=alert.since.timestamp(),
        link=link,
    )


def evaluate(
    db: Database,
    units: Mapping[str, str],
    *,
    now: float,
    max_gap: float,
    link: Callable[[int], str | None] = lambda _id: None,
) -> dict[str, Any]:
    """One round; returns what it did (for the API's ``evaluator.last_round``)."""
    with db.reading() as s:
        snap = read(s, now, max_gap)
    changes = plan(snap, units, max_gap)
    active, gone = cond.active_units(snap.hosts.values())
    counts: dict[str, int] = {}
    when = dt.datetime.fromtimestamp(now, dt.UTC)
    with db.session() as s:
        enabled = set(s.scalars(select(AlertRule.id).where(AlertRule.enabled.is_(True))))
        rows = s.execute(select(AlertChannel.id, AlertChannel.name).where(AlertChannel.enabled))
        box = Outbox(s, when, link, uuid.uuid4().hex, {int(i): str(n) for i, n in rows})
        for ch in changes:
            if ch.rule.id not in enabled:
                continue  # disabled or removed since the snapshot was read
            if apply(s, ch, when, box):
                counts[ch.action] = counts.get(ch.action, 0) + 1
        remember_units(s, active - snap.seen_active, gone & snap.seen_active, when)
    return {"at": now, "rules": len(snap.rules), "hosts": len(snap.hosts),
            "changes": counts, "queued": box.queued}  # fmt: skip


def apply(s: Session, ch: Change, now: dt.datetime, box: Outbox) -> bool:
    """Write one step; False when another evaluator got there first."""
    p, lv = ch.problem, ch.live
    if ch.action in (lc.CREATE_PENDING, lc.CREATE_OPEN):
        assert p is not None
        opening = ch.action == lc.CREATE_OPEN
        since = now if p.since is None else min(now, dt.datetime.fromtimestamp(p.since, dt.UTC))
        alert = Alert(
            key=ch.key, rule_id=ch.rule.id, rule_name=ch.rule.name, kind=ch.rule.kind,
            server_id=p.server_id, server_name=p.server_name, subject=p.subject[:512],
            state="open" if opening else "pending", summary=p.summary, value=p.value,
            detail=dict(p.detail), since=since, opened_at=now if opening else None,
            last_seen_at=now,
        )  # fmt: skip
        try:
            with s.begin_nested():
                s.add(alert)
                s.flush()
        except IntegrityError:
            return False  # the same key is live already: another evaluator made it
        if opening:
            box.tell("open", alert, ch.rule)
        return True
    assert lv is not None
    aid = lv.current.id
    seen = {} if p is None else {"summary": p.summary, "value": p.value, "detail": dict(p.detail),
                                 "last_seen_at": now}  # fmt: skip
    if ch.action == lc.DROP:
        res = s.execute(delete(Alert).where(Alert.id == aid, Alert.state == "pending"))
        return bool(res.rowcount)  # type: ignore[attr-defined]
    moves: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
        lc.UPDATE: (("pending", "open"), {}),
        lc.OPEN: (("pending",), {"state": "open", "opened_at": now}),
        lc.RESOLVING: (("open",), {"state": "resolving", "clear_since": now}),
        lc.REOPEN: (("resolving",), {"state": "open", "clear_since": None}),
        lc.RESOLVE: (("open", "resolving"),
                     {"state": "resolved", "resolved_at": now, "resolution": "cleared"}),
    }  # fmt: skip
    expected, values = moves[ch.action]
    res = s.execute(
        update(Alert)
        .where(Alert.id == aid, Alert.state.in_(expected))
        .values(**seen, **values)
        .execution_options(synchronize_session=False)
    )
    if not res.rowcount:  # type: ignore[attr-defined]
        return False
    if ch.action in (lc.OPEN, lc.RESOLVE):
        row = s.get(Alert, aid, populate_existing=True)
        if row is not None:
            box.tell("open" if ch.action == lc.OPEN else "resolve", row, ch.rule)
    return True


def remember_units(
    s: Session, active: set[tuple[int, str]], gone: set[tuple[int, str]], now: dt.datetime
) -> None:
    """Keep the memory of units seen active (a service rule's "where it was active")."""
    for sid, unit in sorted(active):
        try:
            with s.begin_nested():
                s.add(AlertUnitSeen(server_id=sid, unit=unit[:255], active_at=now))
                s.flush()
        except IntegrityError:
            pass  # another evaluator, or a server removed meanwhile
    for sid, unit in sorted(gone):
        s.execute(delete(AlertUnitSeen).where(AlertUnitSeen.server_id == sid,
                                              AlertUnitSeen.unit == unit))  # fmt: skip


def close_for_rule(s: Session, rule_id: int, reason: str, now: dt.datetime) -> int:
    """Resolve a rule's live alerts quietly (the rule was disabled or removed: its problems
    are no longer watched, which is not the same as fixed, so nobody is told "resolved")."""
    s.execute(delete(Alert).where(Alert.rule_id == rule_id, Alert.state == "pending"))
    res = s.execute(
        update(Alert)
        .where(Alert.rule_id == rule_id, Alert.resolved_at.is_(None))
        .values(state="resolved", resolved_at=now, resolution=reason)
        .execution_options(synchronize_session=False)
    )
    return int(res.rowcount or 0)  # type: ignore[attr-defined]

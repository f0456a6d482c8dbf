"""Alerts: open and past alerts (filtered by state), an alert's page with its notifications
and their delivery attempts, the rules (operators change them) and the notification
channels (admins change them, and "send a test"; URLs shown with their secrets hidden).
Changes go through the alerts' own functions (alerts/admin.py), as the API's do."""

from __future__ import annotations

from typing import Any

from flask import current_app, request
from flask.typing import ResponseReturnValue
from sqlalchemy import func, select

from kernel.exceptions import InvalidInput, NotFound
from kernel.server.alerts import admin
from kernel.server.alerts.rules import KINDS, LOAD_METRICS, PARAMS
from kernel.server.alerts.schemas import ChannelCreate, ChannelEdit, RuleCreate, RuleEdit
from kernel.server.alerts.shapes import (
    alert_json,
    channel_json,
    last_deliveries,
    notifications_json,
    rule_json,
)
from kernel.server.models.alerts import Alert, AlertChannel, AlertNotification, AlertRule
from kernel.server.ui.web import bp, form_list, form_model, form_text, redirect_to, render
from kernel.server.web import audit, context
from kernel.server.web.access import actor, role

PAGE = 100
FILTERS = ("open", "pending", "resolved", "all")
LIST_FIELDS = ("services", "kinds", "mounts")  # thresholds that are lists of words
TEXT_FIELDS = ("metric",)


# -- alerts -------------------------------------------------------------------------------------
@bp.get("/alerts")
@role("viewer")
def alerts_page() -> str:
    state = request.args.get("state", "all")
    state = state if state in FILTERS else "all"
    before = request.args.get("before", type=int)
    q = select(Alert).order_by(Alert.id.desc()).limit(PAGE + 1)
    if state == "open":
        q = q.where(Alert.state.in_(("open", "resolving")))
    elif state != "all":
        q = q.where(Alert.state == state)
    if before and 0 < before < 2**31:
        q = q.where(Alert.id < before)
    s = context.session()
    rows = list(s.scalars(q))
    open_count = s.scalar(
        select(func.count()).select_from(Alert).where(Alert.state.in_(("open", "resolving")))
    )
    return render(
        "alerts.html",
        active="alerts",
        tab="alerts",
        alerts=[alert_json(a) for a in rows[:PAGE]],
        more=len(rows) > PAGE,
        last_id=rows[PAGE - 1].id if len(rows) > PAGE else None,
        state=state,
        filters=FILTERS,
        open_count=open_count or 0,
        evaluator=context.alerts(),
    )


@bp.get("/alerts/<int:alert_id>")
@role("viewer")
def alert_page(alert_id: int) -> str:
    s = context.session()
    alert = s.get(Alert, alert_id)
    if alert is None:
        raise NotFound(f"no alert {alert_id}")
    rows = s.scalars(
        select(AlertNotification)
        .where(AlertNotification.alert_id == alert.id)
        .order_by(AlertNotification.id)
    )
    return render(
        "alert.html",
        active="alerts",
        tab="alerts",
        alert=alert_json(alert),
        notifications=notifications_json(s, rows),
    )


# -- rules --------------------------------------------------------------------------------------
def _float(name: str) -> float | None:
    raw = form_text(name, 40).strip()
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        raise InvalidInput(f"'{name}' must be a number") from None


def _thresholds(kind: str) -> dict[str, Any]:
    """The form's thresholds of ``kind`` (those left empty keep their defaults)."""
    out: dict[str, Any] = {}
    for name in PARAMS.get(kind, {}):
        if name in LIST_FIELDS:
            if form_text(name, 10000).strip():
                out[name] = form_list(name)
        elif name in TEXT_FIELDS:
            if form_text(name, 40):
                out[name] = form_text(name, 40)
        else:
            value = _float(name)
            if value is not None:
                out[name] = value
    return out


def _rule_fields() -> dict[str, Any]:
    fields: dict[str, Any] = {"name": form_text("name", 200).strip(), "tags": form_list("tags")}
    for hold in ("hold_open", "hold_resolve"):
        value = _float(hold)
        if value is not None:
            fields[hold] = value
    fields["enabled"] = bool(form_text("enabled", 5))
    return fields


def _channel_ids() -> list[int]:
    out = []
    for raw in request.form.getlist("channels")[:100]:
        try:
            out.append(int(raw))
        except ValueError:
            raise InvalidInput("'channels' must be channel ids") from None
    return out


@bp.get("/alerts/rules")
@role("viewer")
def rules_page() -> str:
    s = context.session()
    rules = [rule_json(r) for r in s.scalars(select(AlertRule).order_by(AlertRule.name))]
    chans = {c.id: c.name for c in s.scalars(select(AlertChannel).order_by(AlertChannel.name))}
    return render(
        "alert_rules.html",
        active="alerts",
        tab="rules",
        rules=rules,
        channels=chans,
        kinds=KINDS,
        params=PARAMS,
        metrics=LOAD_METRICS,
    )


@bp.post("/alerts/rules")
@role("operator")
def add_alert_rule() -> ResponseReturnValue:
    kind = form_text("kind", 20)
    fields = {**_rule_fields(), "kind": kind, **_thresholds(kind)}
    ids = _channel_ids()
    if ids:
        fields["channels"] = ids
    body = form_model(RuleCreate, fields)
    audit.note("alert_rule.create", target=body.name, kind=body.kind)
    admin.create_rule(context.session(), body, actor())
    context.alerts().wake()
    return redirect_to("/alerts/rules")


@bp.post("/alerts/rules/<int:rule_id>")
@role("operator")
def edit_alert_rule(rule_id: int) -> ResponseReturnValue:
    s = context.session()
    rule = admin.get_rule(s, rule_id)
    fields = {**_rule_fields(), **_thresholds(rule.kind)}
    ids = _channel_ids()
    if ids:
        fields["channels"] = ids
    else:
        fields["all_channels"] = True
    body = form_model(RuleEdit, fields)
    audit.note("alert_rule.edit", target=rule.name, fields=sorted(body.model_fields_set))
    admin.edit_rule(s, rule, body)
    context.alerts().wake()
    return redirect_to("/alerts/rules")


@bp.post("/alerts/rules/<int:rule_id>/delete")
@role("operator")
def remove_alert_rule(rule_id: int) -> ResponseReturnValue:
    s = context.session()
    rule = admin.get_rule(s, rule_id)
    audit.note("alert_rule.remove", target=rule.name)
    admin.remove_rule(s, rule)
    return redirect_to("/alerts/rules")


# -- channels -----------------------------------------------------------------------------------
@bp.get("/alerts/channels")
@role("viewer")
def channels_page() -> str:
    s = context.session()
    rows = s.scalars(select(AlertChannel).order_by(AlertChannel.name)).all()
    last = last_deliveries(s, [c.id for c in rows])
    return render(
        "alert_channels.html",
        active="alerts",
        tab="channels",
        channels=[channel_json(c, last.get(c.id)) for c in rows],
    )


@bp.post("/alerts/channels")
@role("admin")
def add_alert_channel() -> ResponseReturnValue:
    body = form_model(
        ChannelCreate,
        {
            "name": form_text("name", 200).strip(),
            "url": form_text("url", 4000).strip(),
            "enabled": bool(form_text("enabled", 5)),
        },
    )
    audit.note("alert_channel.create", target=body.name)
    admin.create_channel(context.session(), body, actor())
    return redirect_to("/alerts/channels")


@bp.post("/alerts/channels/<int:channel_id>")
@role("admin")
def edit_alert_channel(channel_id: int) -> ResponseReturnValue:
    s = context.session()
    ch = admin.get_channel(s, channel_id)
    fields: dict[str, Any] = {
        "name": form_text("name", 200).strip(),
        "enabled": bool(form_text("enabled", 5)),
    }
    url = form_text("url", 4000).strip()
    if url:  # empty: the URL (and its secrets) stay as they are
        fields["url"] = url
    body = form_model(ChannelEdit, fields)
    audit.note("alert_channel.edit", target=ch.name, fields=sorted(body.model_fields_set))
    admin.edit_channel(s, ch, body)
    return redirect_to("/alerts/channels")


@bp.post("/alerts/channels/<int:channel_id>/delete")
@role("admin")
def remove_alert_channel(channel_id: int) -> ResponseReturnValue:
    s = context.session()
    ch = admin.get_channel(s, channel_id)
    audit.note("alert_channel.remove", target=ch.name)
    admin.remove_channel(s, ch)
    return redirect_to("/alerts/channels")


@bp.post("/alerts/channels/<int:channel_id>/test")
@role("admin")
def test_alert_channel(channel_id: int) -> str:
    """Send a test message now; the result (sent, or the error) replaces the button's
    output box."""
    s = context.session()
    ch = admin.get_channel(s, channel_id)
    audit.note("alert_channel.test", target=ch.name)
    context.close_session()  # no transaction held while the message goes out
    timeout = float(current_app.config["ALERTS_SEND_TIMEOUT"])
    n, sent = admin.send_test(context.db(), channel_id, actor(), timeout)
    return render("_channel_test.html", sent=sent, notification_id=n.id)

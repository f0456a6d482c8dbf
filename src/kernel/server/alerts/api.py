"""The routes of alerts (/api/v1/alerts): the open and past alerts, the rules that raise
them, the channels that carry their messages (with "send a test"), and every notification
with its delivery attempts."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify
from sqlalchemy import select

from kernel.exceptions import NotFound
from kernel.server.alerts import admin
from kernel.server.alerts.schemas import (
    AlertAnswer,
    AlertList,
    AlertListAnswer,
    ChannelAnswer,
    ChannelCreate,
    ChannelEdit,
    ChannelListAnswer,
    NotificationList,
    NotificationListAnswer,
    Removed,
    RuleAnswer,
    RuleCreate,
    RuleEdit,
    RuleListAnswer,
    TestAnswer,
)
from kernel.server.alerts.shapes import (
    alert_json,
    channel_json,
    last_deliveries,
    notifications_json,
    rule_json,
)
from kernel.server.models.alerts import Alert, AlertChannel, AlertNotification, AlertRule
from kernel.server.web import audit, context
from kernel.server.web.access import actor, role
from kernel.server.web.endpoint import endpoint

bp = Blueprint("alerts", __name__, url_prefix="/api/v1/alerts")


# -- alerts -------------------------------------------------------------------------------------
@bp.get("")
@role("viewer")
@endpoint("open and past alerts, newest first", query=AlertList, answers={200: AlertListAnswer})
def list_alerts(query: AlertList) -> Response:
    """``?state=open`` (open or resolving), ``pending`` (held before opening), ``resolved``,
    ``all`` (default); ``?rule=<id>``, ``?server=<name>``, ``?before=<id>`` pages back."""
    q = select(Alert).order_by(Alert.id.desc()).limit(query.limit)
    if query.state == "open":
        q = q.where(Alert.state.in_(("open", "resolving")))
    elif query.state != "all":
        q = q.where(Alert.state == query.state)
    if query.rule is not None:
        q = q.where(Alert.rule_id == query.rule)
    if query.server is not None:
        q = q.where(Alert.server_name == query.server)
    if query.before is not None:
        q = q.where(Alert.id < query.before)
    rows = context.session().scalars(q).all()
    svc = context.alerts()
    evaluator = {"running": svc.running, "interval": svc.interval, "last_round": svc.last_round}
    return jsonify({"alerts": [alert_json(a) for a in rows], "evaluator": evaluator})


@bp.get("/<int:alert_id>")
@role("viewer")
@endpoint("one alert with its notifications and their delivery attempts",
          answers={200: AlertAnswer})  # fmt: skip
def show_alert(alert_id: int) -> Response:
    s = context.session()
    alert = s.get(Alert, alert_id)
    if alert is None:
        raise NotFound(f"no alert {alert_id}")
    rows = s.scalars(
        select(AlertNotification)
        .where(AlertNotification.alert_id == alert.id)
        .order_by(AlertNotification.id)
    )
    return jsonify({**alert_json(alert), "notifications": notifications_json(s, rows)})


@bp.get("/notifications")
@role("viewer")
@endpoint("notifications with their delivery attempts, newest first", query=NotificationList,
          answers={200: NotificationListAnswer})  # fmt: skip
def list_notifications(query: NotificationList) -> Response:
    """``?channel=<id>``, ``?state=failed`` …, ``?before=<id>`` pages back."""
    q = select(AlertNotification).order_by(AlertNotification.id.desc()).limit(query.limit)
    if query.channel is not None:
        q = q.where(AlertNotification.channel_id == query.channel)
    if query.state is not None:
        q = q.where(AlertNotification.state == query.state)
    if query.before is not None:
        q = q.where(AlertNotification.id < query.before)
    s = context.session()
    return jsonify({"notifications": notifications_json(s, s.scalars(q).all())})


# -- rules --------------------------------------------------------------------------------------
@bp.get("/rules")
@role("viewer")
@endpoint("alert rules", answers={200: RuleListAnswer})
def list_rules() -> Response:
    rows = context.session().scalars(select(AlertRule).order_by(AlertRule.name))
    return jsonify({"rules": [rule_json(r) for r in rows]})


@bp.post("/rules")
@role("operator")
@endpoint("add an alert rule", body=RuleCreate, answers={201: RuleAnswer})
def add_rule(body: RuleCreate) -> tuple[Response, int]:
    """``{"name", "kind": offline|service|job|disk|load, <its thresholds>, "tags"?,
    "channels"? (ids; default every channel), "hold_open"?, "hold_resolve"?, "enabled"?}``
    (docs/alerts.md)."""
    audit.note("alert_rule.create", target=body.name, kind=body.kind)
    rule = admin.create_rule(context.session(), body, actor())
    context.alerts().wake()
    return jsonify(rule_json(rule)), 201


@bp.get("/rules/<int:rule_id>")
@role("viewer")
@endpoint("one alert rule", answers={200: RuleAnswer})
def show_rule(rule_id: int) -> Response:
    return jsonify(rule_json(admin.get_rule(context.session(), rule_id)))


@bp.patch("/rules/<int:rule_id>")
@role("operator")
@endpoint("edit an alert rule (disabling it closes its alerts quietly)", body=RuleEdit,
          answers={200: RuleAnswer})  # fmt: skip
def edit_rule(rule_id: int, body: RuleEdit) -> Response:
    s = context.session()
    rule = admin.get_rule(s, rule_id)
    audit.note("alert_rule.edit", target=rule.name, fields=sorted(body.model_fields_set))
    rule = admin.edit_rule(s, rule, body)
    context.alerts().wake()
    return jsonify(rule_json(rule))


@bp.delete("/rules/<int:rule_id>")
@role("operator")
@endpoint("remove an alert rule (its alerts stay in the history)", answers={200: Removed})
def remove_rule(rule_id: int) -> Response:
    s = context.session()
    rule = admin.get_rule(s, rule_id)
    audit.note("alert_rule.remove", target=rule.name)
    admin.remove_rule(s, rule)
    return jsonify({"removed": True, "id": rule_id})


# -- channels -----------------------------------------------------------------------------------
@bp.get("/channels")
@role("viewer")
@endpoint("notification channels (their URLs' secrets hidden)",
          answers={200: ChannelListAnswer})  # fmt: skip
def list_channels() -> Response:
    s = context.session()
    rows = s.scalars(select(AlertChannel).order_by(AlertChannel.name)).all()
    last = last_deliveries(s, [c.id for c in rows])
    return jsonify({"channels": [channel_json(c, last.get(c.id)) for c in rows]})


@bp.post("/channels")
@role("admin")
@endpoint("add a notification channel (an apprise URL)", body=ChannelCreate,
          answers={201: ChannelAnswer})  # fmt: skip
def add_channel(body: ChannelCreate) -> tuple[Response, int]:
    """``{"name", "url": "json://host/path" | "mailto://…" | "dingtalk://…" | …}``; a URL
    apprise does not understand is a 400 saying why."""
    audit.note("alert_channel.create", target=body.name)
    ch = admin.create_channel(context.session(), body, actor())
    return jsonify(channel_json(ch)), 201


@bp.get("/channels/<int:channel_id>")
@role("viewer")
@endpoint("one notification channel", answers={200: ChannelAnswer})
def show_channel(channel_id: int) -> Response:
    s = context.session()
    ch = admin.get_channel(s, channel_id)
    return jsonify(channel_json(ch, last_deliveries(s, [ch.id]).get(ch.id)))


@bp.patch("/channels/<int:channel_id>")
@role("admin")
@endpoint("edit a notification channel", body=ChannelEdit, answers={200: ChannelAnswer})
def edit_channel(channel_id: int, body: ChannelEdit) -> Response:
    s = context.session()
    ch = admin.get_channel(s, channel_id)
    audit.note("alert_channel.edit", target=ch.name, fields=sorted(body.model_fields_set))
    return jsonify(channel_json(admin.edit_channel(s, ch, body)))


@bp.delete("/channels/<int:channel_id>")
@role("admin")
@endpoint("remove a notification channel (what it was owed is cancelled)",
          answers={200: Removed})  # fmt: skip
def remove_channel(channel_id: int) -> Response:
    s = context.session()
    ch = admin.get_channel(s, channel_id)
    audit.note("alert_channel.remove", target=ch.name)
    admin.remove_channel(s, ch)
    return jsonify({"removed": True, "id": channel_id})


@bp.post("/channels/<int:channel_id>/test")
@role("admin")
@endpoint("send a test message now (a target that is down is an answer, not an error)",
          answers={200: TestAnswer})  # fmt: skip
def test_channel(channel_id: int) -> Response:
    """Waits for the delivery (at most ALERTS_SEND_TIMEOUT); ``sent`` says whether it got
    through and ``error`` why not. The attempt is recorded like every notification's."""
    s = context.session()
    ch = admin.get_channel(s, channel_id)
    audit.note("alert_channel.test", target=ch.name)
    context.close_session()  # no transaction held while the message goes out
    timeout = float(current_app.config["ALERTS_SEND_TIMEOUT"])
    n, sent = admin.send_test(context.db(), channel_id, actor(), timeout)
    (shown,) = notifications_json(context.session(), [n])
    return jsonify(
        {"sent": sent.ok, "error": sent.error, "duration": sent.duration,
         "notification_id": n.id, "notification": shown}
    )  # fmt: skip

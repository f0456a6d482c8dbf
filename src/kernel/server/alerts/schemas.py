"""What the alerts API takes and answers (core/inputs.py explains the declarations). A rule's
thresholds are flat fields of its body; rules.params_for keeps those of its kind."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, Field

from kernel.server.alerts.rules import KINDS, LOAD_METRICS
from kernel.server.core.inputs import (
    Answer,
    Body,
    Id,
    Name,
    NoNul,
    NotBlank,
    Query,
    Tags,
    one_of,
)

Label = Annotated[str, Field(min_length=1, max_length=64), NoNul, NotBlank]
Seconds = Annotated[float, Field(ge=0, le=30 * 86400, allow_inf_nan=False)]
JobKind = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[a-z][a-z0-9_-]*$")]


def _mount(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError("must be an absolute path (a mount point such as /var)")
    return value


Mount = Annotated[str, Field(min_length=1, max_length=1024), NoNul, AfterValidator(_mount)]


class Thresholds(Body):
    """Every kind's thresholds (each applies to one kind: rules.PARAMS)."""

    seconds: Annotated[float, Field(ge=1, le=30 * 86400, allow_inf_nan=False)] | None = None
    services: Annotated[list[Name], Field(max_length=200)] | None = None
    kinds: Annotated[list[JobKind], Field(max_length=32)] | None = None
    window: Annotated[float, Field(ge=60, le=30 * 86400, allow_inf_nan=False)] | None = None
    percent: Annotated[float, Field(gt=0, lt=100, allow_inf_nan=False)] | None = None
    mounts: Annotated[list[Mount], Field(max_length=64)] | None = None
    above: Annotated[float, Field(gt=0, le=1e6, allow_inf_nan=False)] | None = None
    minutes: Annotated[float, Field(gt=0, le=1440, allow_inf_nan=False)] | None = None
    metric: Annotated[str, *one_of(LOAD_METRICS)] | None = None

    def given(self) -> dict[str, Any]:
        names = self.model_fields_set & set(Thresholds.model_fields)
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}


class RuleCreate(Thresholds):
    name: Label
    kind: Annotated[str, *one_of(KINDS)]
    tags: Tags = []
    channels: Annotated[list[Id], Field(max_length=100)] | None = None  # None: every channel
    hold_open: Seconds = 0.0
    hold_resolve: Seconds = 60.0
    enabled: bool = True


class RuleEdit(Thresholds):
    """``null`` or absent: unchanged; ``channels`` is set to all with ``all_channels``."""

    name: Label | None = None
    tags: Tags | None = None
    channels: Annotated[list[Id], Field(max_length=100)] | None = None
    all_channels: bool | None = None  # true: every channel (channels: null cannot say it)
    hold_open: Seconds | None = None
    hold_resolve: Seconds | None = None
    enabled: bool | None = None


class ChannelCreate(Body):
    name: Label
    url: Annotated[str, Field(min_length=1, max_length=2000), NoNul]
    enabled: bool = True


class ChannelEdit(Body):
    name: Label | None = None
    url: Annotated[str, Field(min_length=1, max_length=2000), NoNul] | None = None
    enabled: bool | None = None


STATES = ("open", "pending", "resolved", "all")


class AlertList(Query):
    state: Annotated[str, *one_of(STATES)] = "all"  # open: open or resolving
    rule: Id | None = None
    server: Annotated[str, Field(max_length=64), NoNul] | None = None
    limit: Annotated[int, Field(ge=1, le=500)] = 100
    before: Id | None = None  # alerts with a smaller id (paging)


class NotificationList(Query):
    channel: Id | None = None
    state: Annotated[str, *one_of(("queued", "sending", "sent", "failed", "cancelled"))] | None = (
        None
    )
    limit: Annotated[int, Field(ge=1, le=500)] = 100
    before: Id | None = None


# -- answers ------------------------------------------------------------------------------------
class RuleAnswer(Answer):
    id: int
    name: str
    kind: str
    condition: str
    params: dict[str, Any]
    tags: list[str]
    channels: list[int] | None
    hold_open: float
    hold_resolve: float
    enabled: bool
    created_by: str
    created_at: str | None
    updated_at: str | None


class RuleListAnswer(Answer):
    rules: list[RuleAnswer]


class ChannelAnswer(Answer):
    id: int
    name: str
    service: str
    url: str  # secrets hidden
    enabled: bool
    created_by: str
    created_at: str | None
    last_delivery: dict[str, Any] | None = None


class ChannelListAnswer(Answer):
    channels: list[ChannelAnswer]


class DeliveryAnswer(Answer):
    at: str | None
    ok: bool
    error: str | None
    duration: float


class NotificationAnswer(Answer):
    id: int
    alert_id: int | None
    channel_id: int | None
    channel: str
    event: str
    title: str
    state: str
    attempts: int
    last_error: str | None
    created_at: str | None
    next_at: str | None
    done_at: str | None
    deliveries: list[DeliveryAnswer]


class NotificationListAnswer(Answer):
    notifications: list[NotificationAnswer]


class AlertAnswer(Answer):
    id: int
    rule_id: int | None
    rule: str
    kind: str
    server_id: int | None
    server: str | None
    subject: str
    state: str
    summary: str
    value: float | None
    detail: dict[str, Any]
    since: str | None
    opened_at: str | None
    clear_since: str | None
    resolved_at: str | None
    resolution: str | None
    last_seen_at: str | None
    notifications: list[NotificationAnswer] | None = None  # one alert's answer


class EvaluatorAnswer(Answer):
    running: bool
    interval: float
    last_round: dict[str, Any]


class AlertListAnswer(Answer):
    alerts: list[AlertAnswer]
    evaluator: EvaluatorAnswer


class TestAnswer(Answer):
    sent: bool
    error: str | None
    duration: float
    notification_id: int
    notification: NotificationAnswer


class Removed(Answer):
    removed: bool
    id: int

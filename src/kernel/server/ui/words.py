"""Words the console shows for the server's own codes (roles, states, error statuses), in the
user's language. Codes stay in the data (and in the API); only these labels are translated."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from flask import g
from flask_babel import gettext as _


def _once(kind: str, build: Callable[[], dict[str, str]]) -> dict[str, str]:
    """A table of translated words, built once per request: a page of 1000 servers asks for
    these words thousands of times, and each gettext costs tens of microseconds."""
    cache = g.setdefault("ui_words", {})
    if kind not in cache:
        cache[kind] = build()
    found: dict[str, str] = cache[kind]
    return found


def role_name(role: str) -> str:
    return _once("role", lambda: {
        "viewer": _("viewer"), "operator": _("operator"), "admin": _("admin"),
    }).get(role, role)  # fmt: skip


def server_state(state: str) -> str:
    return _once("server", lambda: {
        "online": _("online"),
        "offline": _("offline"),
        "pending": _("pending"),
        "init_failed": _("init failed"),
        "unknown": _("unknown"),
    }).get(state, state)  # fmt: skip


def unit_state(state: str) -> str:
    return _once("unit", lambda: {
        "active": _("active"),
        "inactive": _("inactive"),
        "failed": _("failed"),
        "missing": _("not installed"),
        "activating": _("starting"),
        "deactivating": _("stopping"),
        "unknown": _("unknown"),
    }).get(state, state)  # fmt: skip


def run_state(state: str) -> str:
    return _once("run", lambda: {
        "queued": _("queued"),
        "running": _("running"),
        "ok": _("ok"),
        "failed": _("failed"),
        "timed_out": _("timed out"),
        "cancelled": _("cancelled"),
        "unreachable": _("unreachable"),
        "lost": _("lost"),
        "finished": _("finished"),
        "not_run": _("not run"),
    }).get(state, state)  # fmt: skip


def job_kind(kind: str) -> str:
    return {"command": _("command"), "service": _("service"), "init": _("init script")}.get(
        kind, kind
    )


def error_title(status: int) -> str:
    return {
        400: _("That did not work"),
        401: _("Please log in"),
        403: _("Not allowed"),
        404: _("Not found"),
        405: _("Not allowed"),
        409: _("Not now"),
        410: _("Expired"),
        413: _("Too large"),
        429: _("Too many requests"),
        502: _("A server did not answer"),
        503: _("Unavailable"),
        507: _("The disk is full"),
    }.get(status, _("Something went wrong"))


def op_name(op: str) -> str:
    return {
        "deploy": _("Deploy"),
        "remove": _("Remove"),
        "start": _("Start"),
        "stop": _("Stop"),
        "restart": _("Restart"),
        "enable": _("Enable"),
        "disable": _("Disable"),
        "status": _("Status"),
        "logs": _("Logs"),
    }.get(op, op)


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def uptime(seconds: float | None) -> str:
    if not _number(seconds):
        return "—"
    assert seconds is not None
    s = int(seconds)
    d, h, m = s // 86400, s % 86400 // 3600, s % 3600 // 60
    if d:
        return _("%(d)s d %(h)s h", d=d, h=h)
    if h:
        return _("%(h)s h %(m)s min", h=h, m=m)
    return _("%(m)s min", m=m)


def percent(value: float | None) -> str:
    return f"{value:.0f}%" if _number(value) else "—"


def size(n: float | None) -> str:
    if not _number(n):
        return "—"
    assert n is not None
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def seconds(value: float | None) -> str:
    if not _number(value):
        return "—"
    assert value is not None
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"


def when(value: object) -> str:
    """A stored time as the console shows it (UTC, to the second)."""
    if value is None:
        return "—"
    if hasattr(value, "strftime"):
        return str(value.strftime("%Y-%m-%d %H:%M:%S"))
    text = str(value)
    return text.replace("T", " ")[:19]


def epoch_when(value: float | None) -> str:
    if not value:
        return "—"
    return when(dt.datetime.fromtimestamp(value, dt.UTC))


def unit_words() -> dict[str, str]:
    return {w: unit_state(w) for w in ("active", "inactive", "failed", "missing", "activating",
                                       "deactivating", "unknown")}  # fmt: skip


def run_words() -> dict[str, str]:
    return {w: run_state(w) for w in ("queued", "running", "ok", "failed", "timed_out",
                                      "cancelled", "unreachable", "lost", "finished")}  # fmt: skip


def state_words() -> dict[str, str]:
    return {w: server_state(w) for w in ("online", "offline", "pending", "init_failed", "unknown")}


FILTERS = {
    "uptime": uptime,
    "percent": percent,
    "size": size,
    "seconds": seconds,
    "when": when,
    "epoch_when": epoch_when,
    "role_name": role_name,
    "server_state": server_state,
    "unit_state": unit_state,
    "run_state": run_state,
    "job_kind": job_kind,
    "error_title": error_title,
    "op_name": op_name,
}

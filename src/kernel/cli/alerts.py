"""``kernel alerts``: open and past alerts, the rules that raise them, the channels that
carry their messages (with ``test``), and what was sent (docs/alerts.md)."""

from __future__ import annotations

import sys
from typing import Any

import click

from .api import quote_path
from .errors import ApiError, UsageError
from .options import CONTEXT, api, json_option, out, print_json, tags_of
from .tables import ago, table, when

ALERTS_HELP = """Alerts: what is wrong now and what was, the rules, the channels.

\b
Examples:
  kernel alerts list                      (open and past, newest first)
  kernel alerts list --state open
  kernel alerts show 12
  kernel alerts rules add offline 'server down' --seconds 120
  kernel alerts rules add disk 'disk full' --percent 90 -t web
  kernel alerts rules add load 'busy' --above 8 --minutes 10
  kernel alerts rules add service 'services' --service sums
  kernel alerts rules add job 'nightly jobs' --job-kind schedule
  kernel alerts channels add ops 'json://hooks.example/kernel'
  kernel alerts channels test ops
"""


@click.group(
    "alerts",
    short_help="Alerts: list, show, rules, channels.",
    help=ALERTS_HELP,
    context_settings=CONTEXT,
    no_args_is_help=True,
)
def alerts() -> None:
    pass


def _alerts_table(rows: list[dict[str, Any]]) -> None:
    style = out().style
    cells = [
        [
            a.get("id"),
            a.get("state"),
            a.get("rule"),
            a.get("server") or "-",
            a.get("subject"),
            ago(a.get("since")),
            when(a.get("resolved_at")) if a.get("resolved_at") else "",
            a.get("summary") or "",
        ]
        for a in rows
    ]
    click.echo(
        table(
            ["ID", "STATE", "RULE", "SERVER", "SUBJECT", "SINCE", "RESOLVED", "SUMMARY"],
            cells,
            style,
            paint={1: style.state},
        )
    )


@alerts.command("list", context_settings=CONTEXT)
@click.option(
    "--state",
    type=click.Choice(["open", "pending", "resolved", "all"]),
    default="all",
    show_default=True,
    help="open: open or resolving; pending: held before opening",
)
@click.option("-s", "--server", metavar="NAME", help="only this server's")
@click.option("--rule", metavar="NAME", help="only this rule's")
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True)
@json_option
def list_cmd(state: str, server: str | None, rule: str | None, limit: int, as_json: bool) -> int:
    """Open and past alerts, newest first.

    \b
    Examples:
      kernel alerts list --state open
      kernel alerts list -s web1 --json | jq -r '.alerts[].summary'
    """
    client = api()
    query = [f"state={state}", f"limit={limit}"]
    if server:
        query.append(f"server={quote_path(server)}")
    if rule:
        query.append(f"rule={_find(client, 'rules', rule)['id']}")
    answer = client.get("/api/v1/alerts?" + "&".join(query))
    if as_json:
        print_json(answer)
        return 0
    if not answer.get("alerts"):
        click.echo("no alerts" + ("" if state == "all" else f" ({state})"), err=True)
    else:
        _alerts_table(answer["alerts"])
    ev = answer.get("evaluator") or {}
    if not ev.get("running"):
        click.echo("note: the alerts service is not running in that server process", err=True)
    return 0


@alerts.command("show", context_settings=CONTEXT)
@click.argument("alert_id", type=click.IntRange(1, 2**31 - 1), metavar="ID")
@json_option
def show(alert_id: int, as_json: bool) -> int:
    """One alert, with each notification sent for it and every delivery attempt.

    \b
    Example:
      kernel alerts show 12
    """
    a = api().get(f"/api/v1/alerts/{alert_id}")
    if as_json:
        print_json(a)
        return 0
    style = out().style
    click.echo(f"alert {a['id']}: {style.state(str(a['state']))}  {a.get('summary') or ''}")
    click.echo(f"rule: {a.get('rule')} ({a.get('kind')})   server: {a.get('server') or '-'}")
    click.echo(f"subject: {a.get('subject')}")
    for label, key in (("since", "since"), ("opened", "opened_at"), ("resolved", "resolved_at")):
        if a.get(key):
            click.echo(f"{label}: {when(a[key])}")
    if a.get("resolution"):
        click.echo(f"resolution: {a['resolution']}")
    _notifications_table(a.get("notifications") or [])
    return 0


def _notifications_table(rows: list[dict[str, Any]]) -> None:
    if not rows:
        click.echo("no notifications", err=True)
        return
    style = out().style
    cells = [
        [
            n.get("id"),
            n.get("channel"),
            n.get("event"),
            n.get("state"),
            n.get("attempts"),
            when(n.get("done_at") or n.get("created_at")),
            n.get("last_error") or "",
        ]
        for n in rows
    ]
    click.echo(
        table(
            ["ID", "CHANNEL", "EVENT", "STATE", "TRIES", "AT", "ERROR"],
            cells,
            style,
            paint={3: style.state},
        )
    )


@alerts.command("sent", context_settings=CONTEXT)
@click.option("--channel", metavar="NAME", help="only to this channel")
@click.option("--failed", is_flag=True, help="only those that could not be delivered")
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True)
@json_option
def sent(channel: str | None, failed: bool, limit: int, as_json: bool) -> int:
    """Notifications, newest first: to which channel, for what, delivered or not (and why).

    \b
    Example:
      kernel alerts sent --failed
    """
    client = api()
    query = [f"limit={limit}"]
    if channel:
        query.append(f"channel={_find(client, 'channels', channel)['id']}")
    if failed:
        query.append("state=failed")
    answer = client.get("/api/v1/alerts/notifications?" + "&".join(query))
    if as_json:
        print_json(answer)
    else:
        _notifications_table(answer.get("notifications") or [])
    return 0


# -- rules --------------------------------------------------------------------------------------
@alerts.group("rules", context_settings=CONTEXT, invoke_without_command=True)
@click.pass_context
def rules(ctx: click.Context) -> None:
    """Alert rules: list (the default), add, edit, rm.

    \b
    Examples:
      kernel alerts rules
      kernel alerts rules add disk disk-full --percent 90 -t db
    """
    if ctx.invoked_subcommand is None:
        ctx.exit(ctx.invoke(rules_list, as_json=False))


@rules.command("list", context_settings=CONTEXT)
@json_option
def rules_list(as_json: bool) -> int:
    """Every rule: its kind, condition, scope and channels.

    \b
    Example:
      kernel alerts rules list --json | jq -r '.rules[].name'
    """
    answer = api().get("/api/v1/alerts/rules")
    if as_json:
        print_json(answer)
        return 0
    style = out().style
    cells = [
        [
            r.get("name"),
            r.get("kind"),
            "yes" if r.get("enabled") else "no",
            ",".join(r.get("tags") or []) or "all",
            "all" if r.get("channels") is None else ",".join(map(str, r["channels"])) or "none",
            f"{r.get('hold_open'):g}/{r.get('hold_resolve'):g} s",
            r.get("condition"),
        ]
        for r in answer.get("rules", [])
    ]
    if not cells:
        click.echo("no alert rules", err=True)
        return 0
    click.echo(table(["NAME", "KIND", "ON", "TAGS", "CHANNELS", "HOLD", "CONDITION"], cells, style))
    return 0


def threshold_options(f: Any) -> Any:
    options: list[tuple[tuple[str, ...], dict[str, Any]]] = [
        (("--seconds",), {"type": float, "help": "offline: not answering for this long"}),
        (("--service", "services"), {"multiple": True, "help": "service: watch (repeat)"}),
        (("--job-kind", "kinds"), {"multiple": True, "help": "job: kind, e.g. schedule"}),
        (("--window",), {"type": float, "help": "job: seconds of jobs to look at"}),
        (("--percent",), {"type": float, "help": "disk: use above this %"}),
        (("--mount", "mounts"), {"multiple": True, "help": "disk: mount point (repeat)"}),
        (("--above",), {"type": float, "help": "load: above this"}),
        (("--minutes",), {"type": float, "help": "load: for this long"}),
        (("--metric",), {"type": click.Choice(["load1", "load5", "load15"])}),
        (("-t", "--tag", "tags"), {"multiple": True, "help": "only servers with a tag"}),
        (("--channel", "channels"), {"multiple": True, "help": "send to (repeat)"}),
        (("--hold-open",), {"type": float, "help": "seconds a problem must last"}),
        (("--hold-resolve",), {"type": float, "help": "seconds it must be gone"}),
    ]
    for decl, kw in reversed(options):
        f = click.option(*decl, **kw)(f)
    return f


def _rule_body(client: Any, kw: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for name in ("seconds", "window", "percent", "above", "minutes", "metric",
                 "hold_open", "hold_resolve"):  # fmt: skip
        if kw.get(name) is not None:
            body[name] = kw[name]
    for name in ("services", "kinds", "mounts"):
        if kw.get(name):
            body[name] = list(kw[name])
    if kw.get("tags"):
        body["tags"] = tags_of(kw["tags"])
    if kw.get("channels"):
        body["channels"] = [_find(client, "channels", c)["id"] for c in kw["channels"]]
    return body


@rules.command("add", context_settings=CONTEXT)
@click.argument("kind", type=click.Choice(["offline", "service", "job", "disk", "load"]))
@click.argument("name")
@threshold_options
@click.option("--disabled", is_flag=True, help="add it switched off")
@json_option
def rules_add(kind: str, name: str, disabled: bool, as_json: bool, **kw: Any) -> int:
    """Add a rule of KIND called NAME. Without --channel it sends to every channel; without
    -t it covers every server.

    \b
    Examples:
      kernel alerts rules add offline 'server down' --seconds 120
      kernel alerts rules add disk 'disk full' --percent 90 --mount / -t web
      kernel alerts rules add load busy --above 8 --minutes 10 --metric load5
      kernel alerts rules add service services --service sums --hold-open 30
      kernel alerts rules add job 'nightly jobs' --job-kind schedule --channel ops
    """
    client = api()
    body = {"name": name, "kind": kind, **_rule_body(client, kw)}
    if disabled:
        body["enabled"] = False
    rule = client.post("/api/v1/alerts/rules", body)
    if as_json:
        print_json(rule)
    else:
        click.echo(f"rule {rule['name']}: {rule['condition']}")
    return 0


@rules.command("edit", context_settings=CONTEXT)
@click.argument("name")
@click.option("--name", "new_name", metavar="NEW", help="rename it")
@threshold_options
@click.option("--all-channels", is_flag=True, help="send to every channel")
@click.option("--enable/--disable", "enabled", default=None, help="switch it on or off")
@json_option
def rules_edit(
    name: str, new_name: str | None, all_channels: bool, enabled: bool | None, as_json: bool,
    **kw: Any,
) -> int:  # fmt: skip
    """Change a rule's thresholds, scope, channels or holds; --disable closes its alerts
    without telling anyone "resolved".

    \b
    Examples:
      kernel alerts rules edit 'disk full' --percent 95
      kernel alerts rules edit busy --disable
    """
    client = api()
    rule = _find(client, "rules", name)
    body = _rule_body(client, kw)
    if new_name:
        body["name"] = new_name
    if all_channels:
        body["all_channels"] = True
    if enabled is not None:
        body["enabled"] = enabled
    if not body:
        raise UsageError("nothing to change: give an option (see --help)")
    rule = client.patch(f"/api/v1/alerts/rules/{rule['id']}", body)
    if as_json:
        print_json(rule)
    else:
        click.echo(f"rule {rule['name']}: {rule['condition']}")
    return 0


@rules.command("rm", context_settings=CONTEXT)
@click.argument("name")
@json_option
def rules_rm(name: str, as_json: bool) -> int:
    """Remove a rule (its alerts stay in the history, resolved "rule removed").

    \b
    Example:
      kernel alerts rules rm disk-full
    """
    client = api()
    rule = _find(client, "rules", name)
    answer = client.delete(f"/api/v1/alerts/rules/{rule['id']}")
    if as_json:
        print_json(answer)
    else:
        click.echo(f"removed rule {rule['name']}", err=True)
    return 0


# -- channels -----------------------------------------------------------------------------------
@alerts.group("channels", context_settings=CONTEXT, invoke_without_command=True)
@click.pass_context
def channels(ctx: click.Context) -> None:
    """Notification channels (apprise URLs): list (the default), add, edit, rm, test.

    \b
    Examples:
      kernel alerts channels
      kernel alerts channels test ops-mail
    """
    if ctx.invoked_subcommand is None:
        ctx.exit(ctx.invoke(channels_list, as_json=False))


@channels.command("list", context_settings=CONTEXT)
@json_option
def channels_list(as_json: bool) -> int:
    """Every channel, its URL with the secrets hidden, and its last delivery.

    \b
    Example:
      kernel alerts channels list --json
    """
    answer = api().get("/api/v1/alerts/channels")
    if as_json:
        print_json(answer)
        return 0
    style = out().style
    cells = []
    for c in answer.get("channels", []):
        last = c.get("last_delivery") or {}
        said = "-" if not last else ("sent" if last.get("ok") else f"failed: {last.get('error')}")
        cells.append([c.get("name"), c.get("service"), "yes" if c.get("enabled") else "no",
                      ago(last.get("at")) if last else "-", said, c.get("url")])  # fmt: skip
    if not cells:
        click.echo("no alert channels", err=True)
        return 0
    click.echo(table(["NAME", "SERVICE", "ON", "LAST", "RESULT", "URL"], cells, style))
    return 0


def _read_url(url: str) -> str:
    if url != "-":
        return url
    try:
        raw = sys.stdin.buffer.readline(8192)
    except OSError as e:
        raise UsageError(f"cannot read the URL from stdin: {e.strerror}") from None
    try:
        return raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise UsageError("the URL on stdin is not UTF-8") from None


@channels.command("add", context_settings=CONTEXT)
@click.argument("name")
@click.argument("url")
@click.option("--disabled", is_flag=True, help="add it switched off")
@json_option
def channels_add(name: str, url: str, disabled: bool, as_json: bool) -> int:
    """Add a channel NAME with an apprise URL (- reads it from stdin, so its secrets are not
    in your shell history or the process list).

    \b
    Examples:
      kernel alerts channels add hook 'jsons://hooks.example/kernel'
      kernel alerts channels add mail 'mailtos://user:pass@smtp.example?to=ops@example.com'
      kernel alerts channels add dingtalk - < dingtalk-url.txt
    """
    body: dict[str, Any] = {"name": name, "url": _read_url(url)}
    if disabled:
        body["enabled"] = False
    ch = api().post("/api/v1/alerts/channels", body)
    if as_json:
        print_json(ch)
    else:
        click.echo(f"channel {ch['name']} ({ch['service']}): {ch['url']}")
    return 0


@channels.command("edit", context_settings=CONTEXT)
@click.argument("name")
@click.option("--name", "new_name", metavar="NEW", help="rename it")
@click.option("--url", metavar="URL", help="a new apprise URL (- reads it from stdin)")
@click.option("--enable/--disable", "enabled", default=None)
@json_option
def channels_edit(
    name: str, new_name: str | None, url: str | None, enabled: bool | None, as_json: bool
) -> int:
    """Rename a channel, change its URL, switch it on or off.

    \b
    Examples:
      kernel alerts channels edit ops-mail --disable
      echo "$NEW_URL" | kernel alerts channels edit ops-mail --url -
    """
    client = api()
    ch = _find(client, "channels", name)
    body: dict[str, Any] = {}
    if new_name:
        body["name"] = new_name
    if url is not None:
        body["url"] = _read_url(url)
    if enabled is not None:
        body["enabled"] = enabled
    if not body:
        raise UsageError("nothing to change: give --name, --url, --enable or --disable")
    ch = client.patch(f"/api/v1/alerts/channels/{ch['id']}", body)
    if as_json:
        print_json(ch)
    else:
        click.echo(f"channel {ch['name']} ({ch['service']}): {ch['url']}")
    return 0


@channels.command("rm", context_settings=CONTEXT)
@click.argument("name")
@json_option
def channels_rm(name: str, as_json: bool) -> int:
    """Remove a channel (what it was still owed is cancelled).

    \b
    Example:
      kernel alerts channels rm ops-mail
    """
    client = api()
    ch = _find(client, "channels", name)
    answer = client.delete(f"/api/v1/alerts/channels/{ch['id']}")
    if as_json:
        print_json(answer)
    else:
        click.echo(f"removed channel {ch['name']}", err=True)
    return 0


@channels.command("test", context_settings=CONTEXT)
@click.argument("name")
@json_option
def channels_test(name: str, as_json: bool) -> int:
    """Send a test message to a channel now; exit 1 (with the reason) if it did not get
    through.

    \b
    Example:
      kernel alerts channels test ops
    """
    client = api()
    ch = _find(client, "channels", name)
    answer = client.post(f"/api/v1/alerts/channels/{ch['id']}/test")
    if as_json:
        print_json(answer)
    elif answer.get("sent"):
        click.echo(f"sent a test message to {ch['name']} ({answer.get('duration', 0):.2f} s)")
    else:
        click.echo(f"kernel: not delivered to {ch['name']}: {answer.get('error')}", err=True)
    return 0 if answer.get("sent") else 1


# -- helpers ------------------------------------------------------------------------------------
def _find(client: Any, what: str, name: str) -> dict[str, Any]:
    """A rule or channel by name (or by id, when given digits no name has)."""
    items = client.get(f"/api/v1/alerts/{what}").get(what, [])
    for item in items:
        if item.get("name") == name:
            return dict(item)
    if name.isdigit():
        for item in items:
            if item.get("id") == int(name):
                return dict(item)
    raise ApiError(404, "not_found", f"no alert {what[:-1]} named {name!r}")

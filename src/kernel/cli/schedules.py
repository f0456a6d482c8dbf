"""``kernel schedules``: commands that run by a cron expression in a time zone, each firing
an ordinary job."""

from __future__ import annotations

import sys
from typing import Any

import click

from . import errors
from .api import Api
from .errors import ApiError, UsageError
from .execute import read_script
from .follow import watch
from .nodeset import fold
from .options import (
    CONTEXT,
    api,
    job_options,
    job_opts_from,
    json_option,
    no_cancel_option,
    out,
    print_json,
    target_options,
)
from .tables import ago, table, until, when
from .targets import Targets

SCHEDULES_HELP = """Schedules: a command or script that runs on servers by a cron expression in a
named time zone. Each firing is an ordinary job (see `kernel jobs`); targets (names, tags,
--all) are resolved at each firing.

A planned time the server was not running for is missed: `--missed skip` (the default)
records it, `--missed run_once` runs once as soon as the server is back.

\b
Examples:
  kernel schedules add backup --cron '0 3 * * *' --tz Europe/Berlin -t db -- /usr/local/bin/backup
  kernel schedules add cleanup --cron '*/15 * * * *' --tz UTC --all --script cleanup.sh
  kernel schedules list
  kernel schedules show backup
  kernel schedules run backup          (fire it now, and follow the job)
  kernel schedules disable backup
  kernel schedules next '0 9 * * MON-FRI' --tz Asia/Shanghai
"""


@click.group(
    "schedules",
    short_help="Schedules: cron jobs on servers.",
    help=SCHEDULES_HELP,
    context_settings=CONTEXT,
    no_args_is_help=True,
)
def schedules() -> None:
    pass


def find_schedule(client: Api, name: str) -> dict[str, Any]:
    """A schedule by name (or by id when NAME is a number no schedule is called)."""
    listed = client.get("/api/v1/schedules").get("schedules", [])
    for sc in listed:
        if sc.get("name") == name:
            return dict(sc)
    if name.isdigit():
        for sc in listed:
            if sc.get("id") == int(name):
                return dict(sc)
    raise ApiError(404, "not_found", f"no schedule named {name!r}")


def _targets_text(spec: dict[str, Any]) -> str:
    if spec.get("all"):
        return "all"
    parts = []
    if spec.get("servers"):
        parts.append(fold(spec["servers"]))
    parts += [f"tag:{t}" for t in spec.get("tags") or []]
    return ", ".join(parts) or "-"


def _last(sc: dict[str, Any]) -> str:
    f = sc.get("last_firing")
    if not f:
        return "-"
    state = str(f.get("state"))
    if state == "fired":
        counts = f.get("summary") or {}
        state = str(f.get("job_state") or "fired")
        if state == "finished":
            state = "ok" if set(counts) <= {"ok"} else "failed"
    return f"{state} {ago(f.get('planned_at'))}"


@schedules.command("list", context_settings=CONTEXT)
@json_option
def list_cmd(as_json: bool) -> int:
    """Every schedule: enabled or not, its cron expression and zone, when it fires next and
    how its last firing went.

    \b
    Examples:
      kernel schedules list
      kernel schedules list --json | jq -r '.schedules[] | select(.enabled) | .name'
    """
    answer = api().get("/api/v1/schedules")
    if as_json:
        print_json(answer)
        return 0
    style = out().style
    rows = [
        [
            sc.get("name"),
            "yes" if sc.get("enabled") else "no",
            sc.get("cron"),
            sc.get("timezone"),
            until(sc.get("next_at")) if sc.get("enabled") else "-",
            _last(sc),
            _targets_text(sc.get("targets") or {}),
        ]
        for sc in answer.get("schedules", [])
    ]
    click.echo(
        table(
            ["NAME", "ON", "CRON", "ZONE", "NEXT", "LAST", "TARGETS"],
            rows,
            style,
            paint={1: lambda v: style.paint(v, "32" if v == "yes" else "33")},
        )
    )
    return 0


@schedules.command("show", context_settings=CONTEXT)
@click.argument("name")
@json_option
def show(name: str, as_json: bool) -> int:
    """One schedule: what it runs where, its next planned times, its latest firings.

    \b
    Example:
      kernel schedules show backup
    """
    client = api()
    sc = client.get(f"/api/v1/schedules/{find_schedule(client, name)['id']}")
    if as_json:
        print_json(sc)
        return 0
    style = out().style
    click.echo(f"schedule {sc['name']} ({'enabled' if sc.get('enabled') else 'disabled'})")
    if sc.get("description"):
        click.echo(f"  {sc['description']}")
    text = f" — {sc['cron_text']}" if sc.get("cron_text") else ""
    click.echo(f"cron: {sc.get('cron')} in {sc.get('timezone')}{text}")
    click.echo(
        f"command: {sc.get('cmd')}" + ("   (with a script on stdin)" if sc.get("has_stdin") else "")
    )
    click.echo(
        f"targets: {_targets_text(sc.get('targets') or {})}   timeout: {sc.get('timeout')} s"
    )
    rules = [f"missed: {sc.get('missed')}"]
    if sc.get("skip_if_running"):
        rules.append("skips a firing while the previous one runs")
    click.echo("; ".join(rules))
    for t in sc.get("next_firings") or []:
        click.echo(f"next: {when(t)} ({until(t)})")
    rows = [
        [
            when(f.get("planned_at")),
            f.get("state"),
            f.get("job_id") or "-",
            f.get("job_state") or "-",
            " ".join(f"{k}={v}" for k, v in (f.get("summary") or {}).items()) or "-",
            f.get("note") or "",
        ]
        for f in sc.get("firings") or []
    ]
    if rows:
        click.echo(
            table(
                ["PLANNED", "FIRING", "JOB", "JOB STATE", "RUNS", "NOTE"],
                rows,
                style,
                paint={1: style.state},
            )
        )
    else:
        click.echo("no firings yet")
    return 0


def _command_fields(command: tuple[str, ...], script: str | None) -> dict[str, Any]:
    if script is not None:
        fields: dict[str, Any] = {"stdin": read_script(script), "cmd": "bash -s"}
        if command:
            import shlex

            fields["cmd"] += " -- " + " ".join(shlex.quote(w) for w in command)
        return fields
    if not command or not " ".join(command).strip():
        raise UsageError("give the command to run after --, or --script FILE")
    return {"cmd": " ".join(command)}


def _env(pairs: tuple[str, ...]) -> dict[str, str]:
    out_env = {}
    for e in pairs:
        if "=" not in e or e.startswith("="):
            raise click.BadParameter(f"{e!r} is not NAME=VALUE", param_hint="--env")
        k, v = e.split("=", 1)
        out_env[k] = v
    return out_env


def _schedule_options(f: Any) -> Any:
    opts = [
        click.option("--tz", "timezone", metavar="ZONE",
                     help="IANA time zone of the cron expression, e.g. Europe/Berlin or UTC"),
        click.option("--script", metavar="FILE", help="send FILE (- for stdin) to `bash -s`"),
        click.option("--timeout", type=click.FloatRange(0.1), metavar="SECONDS",
                     help="per host (default 600)"),
        click.option("--missed", type=click.Choice(["skip", "run_once"]),
                     help="planned times the server was down for: skip (default) or run once"),
        click.option("-d", "--description", help="what it is for"),
        click.option("-e", "--env", multiple=True, metavar="NAME=VALUE", help="environment"),
        click.option("--cwd", metavar="DIR", help="working directory on the hosts"),
    ]  # fmt: skip
    for opt in reversed(opts):
        f = opt(f)
    return f


ADD_HELP = """Create a schedule NAME that runs COMMAND (or --script FILE) on the chosen servers
at the times of --cron, read in the time zone --tz. COMMAND comes after `--`; its words are
joined with spaces and run by bash on each server, as with `kernel exec`.

The cron expression has five fields: minute hour day-of-month month day-of-week (as in
crontab), or @hourly, @daily, @weekly, @monthly, @yearly.

\b
Examples:
  kernel schedules add backup --cron '0 3 * * *' --tz Europe/Berlin -t db -- /usr/local/bin/backup
  kernel schedules add report --cron '30 8 * * 1-5' --tz Asia/Shanghai -s web1 --script report.sh
  kernel schedules add slow --cron '*/5 * * * *' --tz UTC --all --skip-if-running -- ./sync
"""


@schedules.command("add", help=ADD_HELP, short_help="Create a schedule.", context_settings=CONTEXT)
@click.argument("name")
@click.option("--cron", required=True, metavar="EXPR", help="e.g. '0 3 * * *'")
@_schedule_options
@target_options
@click.option("--skip-if-running", is_flag=True, help="no firing while the previous one runs")
@click.option("--disabled", is_flag=True, help="create it disabled")
@json_option
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def add(name: str, cron: str, command: tuple[str, ...], **kw: Any) -> int:
    if not kw["timezone"]:
        raise UsageError("give the time zone of the cron expression: --tz ZONE (e.g. UTC)")
    targets = Targets.parse(list(kw["servers"]), list(kw["tags"]), kw["all_"]).require(
        "schedules add"
    )
    body: dict[str, Any] = {
        "name": name,
        "cron": cron,
        "timezone": kw["timezone"],
        "targets": targets.body(),
        **_command_fields(command, kw["script"]),
    }
    for key in ("timeout", "missed", "description", "cwd"):
        if kw[key] is not None:
            body[key] = kw[key]
    if kw["env"]:
        body["env"] = _env(kw["env"])
    if kw["skip_if_running"]:
        body["skip_if_running"] = True
    if kw["disabled"]:
        body["enabled"] = False
    sc = api().post("/api/v1/schedules", body)
    if kw["as_json"]:
        print_json(sc)
        return 0
    nxt = f"; next at {when(sc['next_at'])} ({until(sc['next_at'])})" if sc.get("next_at") else ""
    click.echo(f"schedule {sc['name']} (id {sc['id']}) created{nxt}", err=True)
    return 0


EDIT_HELP = """Change a schedule: only what is given changes. A new --cron or --tz plans from
now on. `--command 'CMD'` or --script FILE replaces what it runs.

\b
Examples:
  kernel schedules edit backup --cron '0 4 * * *'
  kernel schedules edit backup -t db -t backup          (new targets)
  kernel schedules edit backup --no-skip-if-running --missed run_once
"""


@schedules.command(
    "edit", help=EDIT_HELP, short_help="Change a schedule.", context_settings=CONTEXT
)
@click.argument("name")
@click.option("--name", "new_name", metavar="NEW", help="rename it")
@click.option("--cron", metavar="EXPR", help="a new cron expression")
@click.option("--command", "cmd", metavar="CMD", help="a new command (bash line)")
@_schedule_options
@target_options
@click.option("--skip-if-running/--no-skip-if-running", default=None)
@json_option
def edit(name: str, **kw: Any) -> int:
    client = api()
    sc = find_schedule(client, name)
    body: dict[str, Any] = {}
    if kw["cmd"] is not None and kw["script"] is not None:
        raise UsageError("give --command or --script, not both")
    if kw["cmd"] is not None:
        body.update({"cmd": kw["cmd"], "stdin": ""})
    if kw["script"] is not None:
        body.update(_command_fields((), kw["script"]))
    targets = Targets.parse(list(kw["servers"]), list(kw["tags"]), kw["all_"])
    if targets:
        body["targets"] = targets.body()
    for key, field in (("new_name", "name"), ("cron", "cron"), ("timezone", "timezone"),
                       ("timeout", "timeout"), ("missed", "missed"),
                       ("description", "description"), ("cwd", "cwd"),
                       ("skip_if_running", "skip_if_running")):  # fmt: skip
        if kw[key] is not None:
            body[field] = kw[key]
    if kw["env"]:
        body["env"] = _env(kw["env"])
    if not body:
        raise UsageError("nothing to change (see `kernel schedules edit --help`)")
    changed = client.patch(f"/api/v1/schedules/{sc['id']}", body)
    if kw["as_json"]:
        print_json(changed)
    else:
        click.echo(f"schedule {changed['name']} changed", err=True)
    return 0


def _switch(name: str, enabled: bool, as_json: bool) -> int:
    client = api()
    sc = find_schedule(client, name)
    changed = client.patch(f"/api/v1/schedules/{sc['id']}", {"enabled": enabled})
    if as_json:
        print_json(changed)
    elif enabled:
        click.echo(
            f"schedule {changed['name']} enabled; next at {when(changed.get('next_at'))}",
            err=True,
        )
    else:
        click.echo(f"schedule {changed['name']} disabled", err=True)
    return 0


@schedules.command("enable", context_settings=CONTEXT)
@click.argument("name")
@json_option
def enable(name: str, as_json: bool) -> int:
    """Enable a schedule: it fires from its next planned time on (none of the past).

    \b
    Example:
      kernel schedules enable backup
    """
    return _switch(name, True, as_json)


@schedules.command("disable", context_settings=CONTEXT)
@click.argument("name")
@json_option
def disable(name: str, as_json: bool) -> int:
    """Disable a schedule: it does not fire until it is enabled again.

    \b
    Example:
      kernel schedules disable backup
    """
    return _switch(name, False, as_json)


@schedules.command("run", context_settings=CONTEXT)
@click.argument("name")
@job_options
@no_cancel_option
def run(name: str, **kw: Any) -> int:
    """Fire a schedule now, by hand, and follow its job as `kernel exec` does (same exit
    statuses). Its planned times stay as they are.

    \b
    Examples:
      kernel schedules run backup
      kernel schedules run backup --no-wait
    """
    client = api()
    sc = find_schedule(client, name)
    answer = client.post(f"/api/v1/schedules/{sc['id']}/run")
    return watch(client, [answer["job"]], job_opts_from(kw))


@schedules.command("rm", context_settings=CONTEXT)
@click.argument("name")
@click.option("-y", "--yes", is_flag=True, help="do not ask")
@json_option
def rm(name: str, yes: bool, as_json: bool) -> int:
    """Delete a schedule and its firings (the jobs it ran stay in `kernel jobs`).

    \b
    Example:
      kernel schedules rm backup --yes
    """
    client = api()
    sc = find_schedule(client, name)
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError("deleting a schedule needs --yes when there is no terminal to ask on")
        if not click.confirm(f"delete schedule {sc['name']}?"):
            click.echo("nothing deleted", err=True)
            return errors.ERROR
    gone = client.delete(f"/api/v1/schedules/{sc['id']}")
    if as_json:
        print_json(gone)
    else:
        click.echo(f"schedule {gone['name']} deleted", err=True)
    return 0


@schedules.command("next", context_settings=CONTEXT)
@click.argument("cron", metavar="EXPR")
@click.option("--tz", "timezone", required=True, metavar="ZONE", help="e.g. Europe/Berlin")
@click.option("-n", "--count", type=click.IntRange(1, 100), default=5, show_default=True)
@json_option
def next_cmd(cron: str, timezone: str, count: int, as_json: bool) -> int:
    """The next times a cron expression fires in a time zone (nothing is saved): a way to
    check an expression before `kernel schedules add`.

    \b
    Examples:
      kernel schedules next '0 3 * * 1-5' --tz Europe/Berlin
      kernel schedules next @weekly --tz UTC -n 3
    """
    from .api import quote_path

    query = f"?cron={quote_path(cron)}&timezone={quote_path(timezone)}&count={count}"
    answer = api().get("/api/v1/schedules/preview" + query)
    if as_json:
        print_json(answer)
        return 0
    if answer.get("cron_text"):
        click.echo(f"{answer['cron']}: {answer['cron_text']} ({answer['timezone']})")
    for local, utc in zip(answer["next_firings_local"], answer["next_firings"], strict=False):
        click.echo(f"{local}   ({utc})")
    return 0

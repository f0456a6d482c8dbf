"""``kernel services``: the catalogue (service/<name>/ folders) and its operations as jobs."""

from __future__ import annotations

from typing import Any

import click

from .follow import watch
from .nodeset import fold
from .options import (
    CONTEXT,
    api,
    complete_services,
    job_options,
    job_opts_from,
    json_option,
    no_cancel_option,
    out,
    print_json,
    service_path,
    target_options,
    targets_from,
)
from .tables import ago, table

SERVICES_HELP = """The services catalogue and its one-click operations.

Each operation (deploy, remove, start, stop, restart, enable, disable, status, logs) is a
job on the chosen servers, shown live like `kernel exec`, with the same exit statuses.

\b
Examples:
  kernel services list
  kernel services deploy sums -s web1 -s web2
  kernel services restart sums -t web --group
  kernel services logs sums -s web1 --lines 50
  kernel services refresh
"""


@click.group(
    "services",
    short_help="Services: list, deploy, start, logs, ...",
    help=SERVICES_HELP,
    context_settings=CONTEXT,
    no_args_is_help=True,
)
def services() -> None:
    pass


def _catalogue_table(answer: dict[str, Any]) -> None:
    style = out().style
    rows = []
    for svc in answer.get("services", []):
        problems = svc.get("problems") or []
        rows.append(
            [
                svc.get("name"),
                "yes" if svc.get("deployable") else "no",
                svc.get("unit") or "-",
                fold(svc.get("installed") or []) or "-",
                fold(svc.get("active") or []) or "-",
                fold(svc.get("failed") or []) or "-",
                "; ".join(problems) if problems else svc.get("description") or "",
            ]
        )
    click.echo(
        table(
            ["NAME", "OK", "UNIT", "INSTALLED", "ACTIVE", "FAILED", "DESCRIPTION / PROBLEMS"],
            rows,
            style,
            paint={1: lambda v: style.paint(v, "32" if v == "yes" else "31")},
        )
    )
    for problem in answer.get("problems") or []:
        click.echo(f"problem: {problem}", err=True)


@services.command("list", context_settings=CONTEXT)
@json_option
def list_cmd(as_json: bool) -> int:
    """The catalogue: each service, whether it can be deployed, where its unit is installed,
    active or failed (from the status poller), and its problems.

    \b
    Examples:
      kernel services list
      kernel services list --json | jq -r '.services[] | select(.problems != []) | .name'
    """
    answer = api().get("/api/v1/services")
    if as_json:
        print_json(answer)
    else:
        _catalogue_table(answer)
    return 0


@services.command("refresh", context_settings=CONTEXT)
@json_option
def refresh(as_json: bool) -> int:
    """Rescan the service folder on the server ("Refresh services") and list the result.

    \b
    Example:
      kernel services refresh
    """
    answer = api().post("/api/v1/services/refresh")
    if as_json:
        print_json(answer)
        return 0
    _catalogue_table(answer)
    broken = [s["name"] for s in answer.get("services", []) if s.get("problems")]
    click.echo(
        f"{len(answer.get('services', []))} services"
        + (f", {len(broken)} with problems" if broken else ""),
        err=True,
    )
    return 0


@services.command("show", context_settings=CONTEXT)
@click.argument("name", shell_complete=complete_services)
@json_option
def show(name: str, as_json: bool) -> int:
    """One service as it is on disk now: scripts, artifacts, problems, and its unit's state
    on each server (from the last probe).

    \b
    Example:
      kernel services show sums
    """
    answer = api().get(service_path(name))
    if as_json:
        print_json(answer)
        return 0
    style = out().style
    click.echo(f"{answer['name']}: {answer.get('description') or ''}")
    click.echo(f"unit: {answer.get('unit') or '-'}   deployable: {answer.get('deployable')}")
    for problem in answer.get("problems") or []:
        click.echo(f"problem: {problem}")
    for script, digest in sorted((answer.get("scripts") or {}).items()):
        click.echo(f"script: {script}  sha256 {digest[:16]}…")
    for art in answer.get("artifacts") or []:
        click.echo(f"file: {art.get('path')} ({art.get('size')} bytes)")
    rows = []
    for h in answer.get("hosts") or []:
        unit = h.get("unit") or {}
        rows.append(
            [
                h.get("server"),
                h.get("health"),
                unit.get("load_state", "-"),
                unit.get("active_state", "-"),
                unit.get("sub_state", "-"),
                unit.get("unit_file_state", "-"),
                ago(h.get("probed_at")),
            ]
        )
    if rows:
        click.echo(
            table(
                ["SERVER", "HEALTH", "LOAD", "ACTIVE", "SUB", "FILE", "PROBED"],
                rows,
                style,
                paint={1: style.state, 3: style.state},
            )
        )
    return 0


OP_HELP = {
    "deploy": "Deploy (install or update) SERVICE: its deploy.sh, then systemd must know the unit.",
    "remove": "Remove SERVICE: its remove.sh, then the unit must be gone.",
    "start": "systemctl start SERVICE's unit.",
    "stop": "systemctl stop SERVICE's unit.",
    "restart": "systemctl restart SERVICE's unit.",
    "enable": "systemctl enable SERVICE's unit.",
    "disable": "systemctl disable SERVICE's unit.",
    "status": "systemctl status of SERVICE's unit, live from each server.",
    "logs": "The journal's last lines of SERVICE's unit on each server.",
}


def _operation(op: str) -> click.Command:
    example = f"kernel services {op} sums -s web1"
    extra = "\n  kernel services logs sums -t web --lines 50" if op == "logs" else ""
    help_text = (
        f"{OP_HELP[op]}\n\nRuns as a job on the chosen servers; output, summary and exit "
        f"status as for `kernel exec`.\n\n\b\nExamples:\n  {example}\n"
        f"  kernel services {op} sums -t web --group{extra}\n"
    )

    @click.command(op, help=help_text, context_settings=CONTEXT)
    @click.argument("name", metavar="SERVICE", shell_complete=complete_services)
    @target_options
    @click.option(
        "--timeout",
        type=click.FloatRange(1, min_open=False),
        metavar="SECONDS",
        help="per host (default: the operation's own)",
    )
    @job_options
    @no_cancel_option
    def command(name: str, timeout: float | None, lines: int | None = None, **kw: Any) -> int:
        targets = targets_from(kw, f"services {op}")
        opts = job_opts_from(kw)
        body: dict[str, Any] = {"targets": targets.body()}
        if timeout is not None:
            body["timeout"] = timeout
        if lines is not None:
            body["lines"] = lines
        client = api()
        job = client.post(service_path(name, op), body)
        return watch(client, [job], opts)

    if op == "logs":
        command = click.option(
            "-n", "--lines", type=click.IntRange(1, 10000), help="how many (default 200)"
        )(command)
    return command


for _op in OP_HELP:
    services.add_command(_operation(_op))

"""``kernel init run|status``: the init scripts of the data dir's ``init/`` on servers, and
`watch_init`, which `kernel enroll` uses too."""

from __future__ import annotations

from typing import Any

import click

from . import errors
from .api import Api
from .errors import ApiError
from .follow import Follower
from .options import CONTEXT, api, json_option, out, print_json, server_list, target_options
from .output import Out
from .render import Quiet, Sink, run_detail
from .tables import table, when
from .targets import Targets, choose

ACTIVE = ("queued", "running")


def watch_init(
    client: Api, o: Out, srv: dict[str, Any], *, since: int = 0, quiet: bool = False
) -> int:
    """Show a server's init scripts whose job is ``since`` or later, in the order they ran
    (a finished one's output is replayed), following each live, until none is left queued
    or running; the exit status says whether every one ended ok."""
    followed: set[int] = set()
    results: list[tuple[str, str]] = []  # (script, run state) of each one followed
    name = str(srv.get("name"))
    path = f"/api/v1/servers/{srv['id']}/init"
    while True:
        scripts = client.get(path).get("scripts", [])
        todo = sorted(
            (
                sc
                for sc in scripts
                if isinstance(sc.get("job_id"), int)
                and sc["job_id"] >= since
                and sc["job_id"] not in followed
            ),
            key=lambda sc: int(sc["job_id"]),
        )
        if not todo:
            break
        sc = todo[0]
        job = client.get(f"/api/v1/jobs/{sc['job_id']}")
        if not quiet:
            o.note(f"{name}: init script {sc['script']}…")
            o.flush()
        sink = Quiet(o) if quiet else Sink(o)
        f = Follower(client, o, sink, progress=False).run(job)
        followed.add(int(sc["job_id"]))
        for r in f.run_list():
            state = str(r.get("state"))
            results.append((str(sc["script"]), state))
            if not quiet:
                detail = "" if state == "ok" else f" ({run_detail(r)})"
                o.note(f"{name}: init script {sc['script']}: {o.err_style.state(state)}{detail}")
    status = errors.exit_status(state for _script, state in results)
    if not quiet:
        if not scripts:
            o.note(f"{name}: no init scripts")
        elif status != errors.OK:
            bad = next(script for script, state in results if state != "ok")
            o.note(
                f"{name}: init stopped at {bad}; fix it, then `kernel init run -s {name}` "
                "continues from there"
            )
    o.flush()
    return status


INIT_HELP = """Init scripts (init/NN-name.sh on the server): run them, see where each stands.

\b
Examples:
  kernel init status -s web1
  kernel init run -s web1                     (continue from the first not ok)
  kernel init run -t web --script 40-ntp.sh   (one script, e.g. added later)
"""


@click.group(
    "init",
    short_help="Init scripts: run, status.",
    help=INIT_HELP,
    context_settings=CONTEXT,
    no_args_is_help=True,
)
def init() -> None:
    pass


def _chosen(client: Api, targets: Targets) -> list[dict[str, Any]]:
    servers = server_list(client)
    names, _skipped = choose(servers, targets)
    by_name = {s["name"]: s for s in servers}
    return [by_name[n] for n in names]


@init.command("run", context_settings=CONTEXT)
@target_options
@click.option("--script", metavar="NAME", help="run this one script (default: the pending ones)")
@json_option
def run(
    servers: tuple[str, ...], tags: tuple[str, ...], all_: bool, script: str | None, as_json: bool
) -> int:
    """Run the init scripts not yet ok on the chosen servers (in order, stopping at the first
    failure), or one --script; shows each as it runs.

    \b
    Examples:
      kernel init run -s web1
      kernel init run --all --script 40-ntp.sh
    """
    client = api()
    chosen = _chosen(client, Targets.parse(list(servers), list(tags), all_).require("init run"))
    o = out()
    started = []
    for srv in chosen:
        try:
            answer = client.post(
                f"/api/v1/servers/{srv['id']}/init", {"script": script} if script else {}
            )
            started.append((srv, int(answer["job_id"])))
        except ApiError as e:
            if e.status != 409:
                raise
            if not as_json:
                o.note(f"{srv['name']}: {e.message}")
    statuses = [errors.OK]
    for srv, job_id in started:
        statuses.append(watch_init(client, o, srv, since=job_id, quiet=as_json))
    if as_json:
        print_json(
            {
                "servers": [
                    {
                        "server": srv["name"],
                        "scripts": client.get(f"/api/v1/servers/{srv['id']}/init")["scripts"],
                    }
                    for srv in chosen
                ]
            }
        )
    return errors.UNREACHABLE if errors.UNREACHABLE in statuses else max(statuses)


@init.command("status", context_settings=CONTEXT)
@target_options
@json_option
def status(servers: tuple[str, ...], tags: tuple[str, ...], all_: bool, as_json: bool) -> int:
    """Each init script on each chosen server: not run, ok, failed…, and whether it changed
    since it ran.

    \b
    Examples:
      kernel init status -s web1
      kernel init status --all --json
    """
    client = api()
    chosen = _chosen(client, Targets.parse(list(servers), list(tags), all_).require("init status"))
    answer = [
        {"server": srv["name"], **client.get(f"/api/v1/servers/{srv['id']}/init")} for srv in chosen
    ]
    if as_json:
        print_json({"servers": answer})
        return 0
    style = out().style
    rows = []
    for entry in answer:
        for sc in entry.get("scripts", []):
            rows.append(
                [
                    entry["server"],
                    sc.get("script"),
                    sc.get("state"),
                    "-" if sc.get("exit_code") is None else sc.get("exit_code"),
                    when(sc.get("finished_at")),
                    "changed since run" if sc.get("changed_since_run") else "",
                ]
            )
    if not rows:
        click.echo("no init scripts", err=True)
        return 0
    click.echo(
        table(
            ["SERVER", "SCRIPT", "STATE", "EXIT", "FINISHED", "NOTE"],
            rows,
            style,
            paint={2: style.state},
        )
    )
    return 0

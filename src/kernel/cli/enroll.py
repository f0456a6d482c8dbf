"""``kernel enroll NAME``: a new server's one-line installer, then its join followed live
until its init scripts have finished."""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from .api import Api
from .errors import ApiError, CliError
from .initscripts import watch_init
from .options import CONTEXT, api, json_option, out, print_json, server_list, tags_of
from .tables import parse_time, when

ENROLL_HELP = """Add server NAME by one-line installer and wait until it has joined.

Prints the command to run as root on the new server, then waits for it to enroll and
shows each init script as it runs. Ctrl-C stops waiting (the command keeps working until
it expires). A pending NAME gets a fresh command (the old one stops working).

\b
Examples:
  kernel enroll web5 -t web
  kernel enroll web5 --no-wait          (just print the command)
"""


@click.command(
    "enroll",
    short_help="Add a server by one-liner; wait for it to join.",
    help=ENROLL_HELP,
    context_settings=CONTEXT,
)
@click.argument("name")
@click.option("-t", "--tag", "tags", multiple=True, metavar="TAG", help="a tag (repeat)")
@click.option("-d", "--description", default="", help="free text")
@click.option("--no-wait", is_flag=True, help="print the command and return")
@click.option("--timeout", type=float, metavar="SECONDS", help="give up waiting after this long")
@json_option
def enroll(
    name: str,
    tags: tuple[str, ...],
    description: str,
    no_wait: bool,
    timeout: float | None,
    as_json: bool,
) -> int:
    client = api()
    existing = [s for s in server_list(client) if s.get("name") == name]
    if existing:
        srv = existing[0]
        if srv.get("state") != "pending":
            raise ApiError(409, "conflict", f"{name} has already joined ({srv.get('state')})")
        answer = client.post(f"/api/v1/servers/{srv['id']}/enroll-token")
    else:
        answer = client.post(
            "/api/v1/servers", {"name": name, "description": description, "tags": tags_of(tags)}
        )
    srv, info = answer["server"], answer["enroll"]
    if as_json and no_wait:
        print_json(answer)
        return 0
    if not as_json:
        print_enroll(srv, info)
    if no_wait:
        return 0
    deadline = _deadline(info, timeout)
    o = out()
    if not as_json:
        o.note(f"waiting for {name} to join (Ctrl-C stops waiting)…")
        o.flush()
    joined = _wait_joined(client, srv["id"], deadline)
    if joined is None:
        raise CliError(f"{name} has not joined in time; `kernel enroll {name}` gives a new command")
    if not as_json:
        o.note(f"{name} joined: {joined.get('agent_url')} ({_os(joined)})")
    status = watch_init(client, o, joined, quiet=as_json)
    if as_json:
        final = client.get(f"/api/v1/servers/{srv['id']}")
        init = client.get(f"/api/v1/servers/{srv['id']}/init").get("scripts", [])
        print_json({"server": final, "init": init})
    return status


def print_enroll(srv: dict[str, Any], info: dict[str, Any]) -> None:
    click.echo(f"{srv['name']} is pending. On it, as root, run:", err=True)
    click.echo(f"  {info['command']}" if sys.stdout.isatty() else info["command"])
    expires = when(info.get("expires_at"))
    click.echo(f"(this command works once, until {expires})", err=True)


def _deadline(info: dict[str, Any], timeout: float | None) -> float:
    if timeout is not None:
        return time.monotonic() + timeout
    expires = parse_time(info.get("expires_at"))
    if expires is None:
        return time.monotonic() + 3600
    import datetime as dt

    return time.monotonic() + max((expires - dt.datetime.now(dt.UTC)).total_seconds(), 0) + 30


def _wait_joined(client: Api, server_id: int, deadline: float) -> dict[str, Any] | None:
    while time.monotonic() < deadline:
        srv = client.get(f"/api/v1/servers/{server_id}")
        if srv.get("removed_at"):
            raise CliError(f"{srv.get('name')} was removed while waiting for it")
        if srv.get("state") != "pending":
            return dict(srv)
        time.sleep(min(0.5, max(deadline - time.monotonic(), 0)))
    return None


def _os(srv: dict[str, Any]) -> str:
    facts = srv.get("facts") or {}
    return str(facts.get("os") or (facts.get("agent") or {}).get("os") or "unknown OS")

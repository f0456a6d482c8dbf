"""``kernel status``: the fleet at a glance, from the status poller's last probes."""

from __future__ import annotations

from typing import Any

import click

from .options import CONTEXT, api, json_option, out, print_json, target_options
from .tables import ago, duration, percent, table
from .targets import Targets

STATUS_HELP = """The fleet at a glance: each joined server's health, OS, load, memory, disk, uptime.

Figures come from the status poller's last probe of each host (GET /api/v1/status);
nothing here waits on a host.

\b
Examples:
  kernel status
  kernel status -t web
  kernel status --json | jq '.hosts[] | select(.state != "online") | .server'
"""


@click.command(
    "status",
    short_help="The fleet at a glance, as a table.",
    help=STATUS_HELP,
    context_settings=CONTEXT,
)
@target_options
@json_option
def status(servers: tuple[str, ...], tags: tuple[str, ...], all_: bool, as_json: bool) -> int:
    client = api()
    answer = client.pages("/api/v1/status", "hosts")
    hosts = answer.get("hosts", [])
    chosen = Targets.parse(list(servers), list(tags), all_)
    if chosen:
        tagged = {
            s["name"]
            for s in client.servers()["servers"]
            if set(chosen.tags) & set(s.get("tags") or [])
        }
        hosts = [
            h
            for h in hosts
            if chosen.all or h.get("server") in chosen.servers or h.get("server") in tagged
        ]
        answer = {**answer, "hosts": hosts}
    if as_json:
        print_json(answer)
        return 0
    o = out()
    style = o.style
    rows = [_row(h) for h in hosts]
    click.echo(
        table(
            ["NAME", "HEALTH", "STATE", "OS", "LOAD", "MEM", "DISK", "UPTIME", "PROBED"],
            rows,
            style,
            paint={1: style.state, 2: style.state},
        )
    )
    poller = answer.get("poller") or {}
    bad = [h["server"] for h in hosts if h.get("state") not in ("online",)]
    every = f"every {duration(poller.get('interval'))}" if poller.get("interval") else ""
    note = f"{len(hosts)} servers, {len(hosts) - len(bad)} online"
    if not poller.get("running"):
        note += "; the status poller is not running on the server"
    elif every:
        note += f"; probed {every}"
    replicas = [r for r in answer.get("replicas") or [] if r.get("alive")]
    if len(replicas) > 1:  # several servers on one PostgreSQL (docs/replicas.md)
        note += f"; {len(replicas)} replicas: " + ", ".join(
            f"{r.get('host')}[{r.get('pid')}]" + ("*" if r.get("me") else "") for r in replicas
        )
    click.echo(style.dim(note), err=True)
    return 0


def _row(h: dict[str, Any]) -> list[object]:
    facts = h.get("facts") or {}
    m = h.get("metrics") or {}
    load = m.get("load1")
    return [
        h.get("server"),
        h.get("state"),
        h.get("server_state"),
        facts.get("os_name") or facts.get("os_id") or "-",
        f"{load:.2f}" if isinstance(load, int | float) else "-",
        percent(m.get("mem_used"), m.get("mem_total")),
        _disk(m.get("disks")),
        duration(m.get("uptime")),
        ago(h.get("probed_at")),
    ]


def _disk(disks: Any) -> str:
    if not isinstance(disks, list) or not disks:
        return "-"
    used = sum(d.get("used") or 0 for d in disks if isinstance(d, dict))
    total = sum(d.get("total") or 0 for d in disks if isinstance(d, dict))
    return percent(used, total)

"""``kernel servers list|show|add|edit|rm|check``: the inventory."""

from __future__ import annotations

import sys
from typing import Any

import click

from . import errors
from .enroll import print_enroll
from .errors import UsageError
from .options import (
    CONTEXT,
    api,
    complete_servers,
    find_server,
    json_option,
    out,
    print_json,
    tags_of,
)
from .tables import ago, table, when

SERVERS_HELP = """The inventory: list, show, add, edit and remove servers.

\b
Examples:
  kernel servers list
  kernel servers show web1
  kernel servers add web2 --url http://10.0.0.7:8001 --key-file web2.key -t web
  kernel servers edit web2 --add-tag prod --description 'front end'
  kernel servers rm web2 --yes
"""


@click.group(
    "servers",
    short_help="The inventory: list, show, add, edit, rm.",
    help=SERVERS_HELP,
    context_settings=CONTEXT,
    no_args_is_help=True,
)
def servers() -> None:
    pass


@servers.command("list", context_settings=CONTEXT)
@click.option("-t", "--tag", help="only servers with this tag")
@click.option("--removed", is_flag=True, help="also removed servers")
@json_option
def list_cmd(tag: str | None, removed: bool, as_json: bool) -> int:
    """Every server: state, agent URL, tags, when it was last seen.

    \b
    Examples:
      kernel servers list
      kernel servers list -t web --json | jq -r '.servers[].name'
    """
    query = []
    if tag:
        query.append(f"tag={_q(tag)}")
    if removed:
        query.append("removed=1")
    answer = api().servers("&".join(query))
    if as_json:
        print_json(answer)
        return 0
    style = out().style
    rows = [
        [
            s.get("name"),
            "removed" if s.get("removed_at") else s.get("state"),
            s.get("agent_url") or "-",
            ",".join(s.get("tags") or []) or "-",
            ago(s.get("last_seen")),
            s.get("last_error") or "",
        ]
        for s in answer.get("servers", [])
    ]
    click.echo(
        table(
            ["NAME", "STATE", "AGENT", "TAGS", "SEEN", "LAST ERROR"],
            rows,
            style,
            paint={1: style.state},
        )
    )
    return 0


@servers.command("show", context_settings=CONTEXT)
@click.argument("name", shell_complete=complete_servers)
@json_option
def show(name: str, as_json: bool) -> int:
    """One server: its record, facts and init scripts.

    \b
    Examples:
      kernel servers show web1
      kernel servers show web1 --json | jq .facts
    """
    client = api()
    srv = find_server(client, name)
    init = client.get(f"/api/v1/servers/{srv['id']}/init").get("scripts", [])
    if as_json:
        print_json({**srv, "init": init})
        return 0
    style = out().style
    facts = srv.get("facts") or {}
    agent = facts.get("agent") or {}
    fields = [
        ("name", srv.get("name")),
        ("id", srv.get("id")),
        ("state", style.state(str(srv.get("state")))),
        ("agent", srv.get("agent_url") or "- (not joined)"),
        ("tags", ", ".join(srv.get("tags") or []) or "-"),
        ("description", srv.get("description") or "-"),
        ("os", facts.get("os") or agent.get("os") or "-"),
        ("kernel", facts.get("kernel") or "-"),
        ("systemd", facts.get("systemd") or "-"),
        ("agent version", agent.get("version") or "-"),
        ("last seen", f"{when(srv.get('last_seen'))} ({ago(srv.get('last_seen'))})"),
        ("last error", srv.get("last_error") or "-"),
        ("added", when(srv.get("created_at"))),
    ]
    if srv.get("tls_fingerprint"):
        fields.append(("tls pin", srv["tls_fingerprint"]))
    for warning in facts.get("warnings") or []:
        fields.append(("warning", warning))
    for key, value in fields:
        click.echo(f"{key + ':':<15}{value}")
    if init:
        click.echo("init scripts:")
        for sc in init:
            exit_code = sc.get("exit_code")
            extra = f" (exit {exit_code})" if exit_code not in (None, 0) else ""
            changed = " — changed since it ran" if sc.get("changed_since_run") else ""
            click.echo(f"  {sc['script']:<24}{style.state(str(sc.get('state')))}{extra}{changed}")
    return 0


def _read_key(key_file: str | None, key_stdin: bool) -> str | None:
    if key_file and key_stdin:
        raise UsageError("give the agent key with --key-file or --key-stdin, not both")
    try:
        if key_stdin:
            raw = sys.stdin.buffer.readline()
        elif key_file:
            with open(key_file, "rb") as fh:
                raw = fh.read(4096)
        else:
            return None
    except OSError as e:
        raise UsageError(f"cannot read the agent key: {e.strerror}") from None
    key = raw.decode("ascii", "replace").strip()
    if not key:
        raise UsageError("the agent key is empty")
    return key


@servers.command("add", context_settings=CONTEXT)
@click.argument("name")
@click.option(
    "--url", "agent_url", metavar="URL", help="the agent's URL, e.g. http://10.0.0.7:8001"
)
@click.option("--key-file", metavar="FILE", help="the agent's key (64 hex), from a file")
@click.option("--key-stdin", is_flag=True, help="read the agent's key from stdin")
@click.option("--tls-fingerprint", metavar="SHA256", help="pin this certificate (https agents)")
@click.option("-t", "--tag", "tags", multiple=True, metavar="TAG", help="a tag (repeat)")
@click.option("-d", "--description", default="", help="free text")
@json_option
def add(
    name: str,
    agent_url: str | None,
    key_file: str | None,
    key_stdin: bool,
    tls_fingerprint: str | None,
    tags: tuple[str, ...],
    description: str,
    as_json: bool,
) -> int:
    """Add a server: with --url and its key it joins now (the agent is checked first);
    without, it is pending and you get the one-line installer to run on it (see also
    `kernel enroll`, which then waits for it).

    \b
    Examples:
      kernel servers add web2 --url http://10.0.0.7:8001 --key-file web2.key -t web
      ssh web3 sudo cat /etc/kernel-agent/key |
          kernel servers add web3 --url http://10.0.0.8:8001 --key-stdin
      kernel servers add web4 -t web    (prints the curl … | bash line)
    """
    key = _read_key(key_file, key_stdin)
    if key and not agent_url:
        raise UsageError("an agent key needs --url (or leave both out to enroll by one-liner)")
    body: dict[str, Any] = {"name": name, "description": description, "tags": tags_of(tags)}
    if agent_url:
        if not key:
            raise UsageError("--url needs the agent's key: --key-file FILE or --key-stdin")
        body.update(agent_url=agent_url, agent_key=key)
        if tls_fingerprint:
            body["tls_fingerprint"] = tls_fingerprint
    answer = api().post("/api/v1/servers", body)
    if as_json:
        print_json(answer)
        return 0
    srv = answer["server"]
    if "enroll" in answer:
        print_enroll(srv, answer["enroll"])
    else:
        click.echo(f"added {srv['name']} ({srv['state']}) at {srv['agent_url']}", err=True)
    return 0


def _q(text: str) -> str:
    from .api import quote_path

    return quote_path(text)


@servers.command("edit", context_settings=CONTEXT)
@click.argument("name", shell_complete=complete_servers)
@click.option("--name", "new_name", metavar="NEW", help="rename the server")
@click.option("-d", "--description", help="replace the description")
@click.option("-t", "--tag", "tags", multiple=True, metavar="TAG", help="replace the tags (repeat)")
@click.option("--add-tag", multiple=True, metavar="TAG", help="add a tag (repeat)")
@click.option("--remove-tag", multiple=True, metavar="TAG", help="remove a tag (repeat)")
@click.option("--url", "agent_url", metavar="URL", help="a new agent URL (the agent is checked)")
@click.option("--key-file", metavar="FILE", help="a new agent key, from a file")
@click.option("--key-stdin", is_flag=True, help="a new agent key, from stdin")
@click.option("--tls-fingerprint", metavar="SHA256", help="pin this certificate (https agents)")
@json_option
def edit(name: str, **kw: Any) -> int:
    """Change a server's name, description, tags, agent URL or key.

    \b
    Examples:
      kernel servers edit web2 --add-tag prod --remove-tag staging
      kernel servers edit web2 --url http://10.0.0.9:8001
      kernel servers edit web2 --name www2
    """
    client = api()
    srv = find_server(client, name)
    body: dict[str, Any] = {}
    if kw["new_name"] is not None:
        body["name"] = kw["new_name"]
    if kw["description"] is not None:
        body["description"] = kw["description"]
    if kw["tags"] or kw["add_tag"] or kw["remove_tag"]:
        tags = set(tags_of(kw["tags"])) if kw["tags"] else set(srv.get("tags") or [])
        tags |= set(tags_of(kw["add_tag"]))
        tags -= set(tags_of(kw["remove_tag"]))
        body["tags"] = sorted(tags)
    if kw["agent_url"]:
        body["agent_url"] = kw["agent_url"]
    key = _read_key(kw["key_file"], kw["key_stdin"])
    if key:
        body["agent_key"] = key
    if kw["tls_fingerprint"]:
        body["tls_fingerprint"] = kw["tls_fingerprint"]
    if not body:
        raise UsageError("nothing to change: see `kernel servers edit --help`")
    answer = client.patch(f"/api/v1/servers/{srv['id']}", body)
    if kw["as_json"]:
        print_json(answer)
        return 0
    click.echo(f"changed {answer['name']}: {', '.join(sorted(body))}", err=True)
    return 0


@servers.command("rm", context_settings=CONTEXT)
@click.argument("names", nargs=-1, required=True, shell_complete=complete_servers)
@click.option("-y", "--yes", is_flag=True, help="do not ask")
@json_option
def rm(names: tuple[str, ...], yes: bool, as_json: bool) -> int:
    """Remove servers: no more jobs run on them (queued runs are cancelled); their history
    stays. The agent keeps running on the host; uninstall it there with
    `curl -fsSL <KERNEL_URL>/agent/uninstall.sh | bash`.

    \b
    Examples:
      kernel servers rm web2
      kernel servers rm web2 web3 --yes
    """
    client = api()
    chosen = [find_server(client, n) for n in names]
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError("removing servers needs --yes when there is no terminal to ask on")
        listed = ", ".join(s["name"] for s in chosen)
        if not click.confirm(f"remove {listed}?"):
            click.echo("nothing removed", err=True)
            return errors.ERROR
    done = []
    for srv in chosen:
        done.append(client.delete(f"/api/v1/servers/{srv['id']}"))
        if not as_json:
            click.echo(f"removed {srv['name']}", err=True)
    if as_json:
        print_json({"servers": done})
    return 0


@servers.command("check", context_settings=CONTEXT)
@click.argument("name", shell_complete=complete_servers)
@json_option
def check(name: str, as_json: bool) -> int:
    """Check a server's agent and environment again (OS, systemd, bash, disk).

    \b
    Example:
      kernel servers check web1
    """
    client = api()
    srv = find_server(client, name)
    answer = client.post(f"/api/v1/servers/{srv['id']}/check")
    if as_json:
        print_json(answer)
        return 0
    facts = answer.get("facts") or {}
    click.echo(f"{answer['name']}: {answer['state']}, {facts.get('os', '?')}")
    for warning in facts.get("warnings") or []:
        click.echo(f"  warning: {warning}")
    return 0


# -- enroll -----------------------------------------------------------------------------------

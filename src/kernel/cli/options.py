"""What the click commands share: the context (profile → API), the target and job options,
``--json``, shell completion of names, and a few helpers."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import click

from . import config
from .api import Api, quote_path
from .errors import ApiError, UsageError
from .follow import JobOptions
from .output import Out
from .targets import Targets

F = TypeVar("F", bound=Callable[..., Any])
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class Obj:
    """``ctx.obj``: the profile chosen on the command line, and the API built from it once."""

    def __init__(self, profile: str | None = None) -> None:
        self.profile = profile
        self._api: Api | None = None

    def api(self) -> Api:
        if self._api is None:
            sess = config.session(self.profile)
            self._api = Api(sess.url, sess.need_token())
        return self._api

    def close(self) -> None:
        if self._api is not None:
            self._api.close()


def add_profile_option(cmd: click.Command) -> None:
    """``--profile`` on every command too (not only before it), like most CLIs take it."""
    if isinstance(cmd, click.Group):
        for sub in cmd.commands.values():
            add_profile_option(sub)
        return
    if any(p.name == "profile" for p in cmd.params):
        return
    cmd.params.append(
        click.Option(
            ["--profile"],
            metavar="NAME",
            expose_value=False,
            callback=_set_profile,
            help="the saved login to use (env KERNEL_PROFILE)",
        )
    )


def _set_profile(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value:
        found = ctx.find_object(Obj)
        if found is not None:
            found.profile = value


def obj() -> Obj:
    ctx = click.get_current_context()
    return ctx.ensure_object(Obj)


def api() -> Api:
    return obj().api()


def out(colour: str = "auto") -> Out:
    return Out(colour)


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


# -- completion of names (best effort: a short timeout, no error ever shown) -----------------
def _complete(path: str, key: str, field: str) -> Callable[..., list[Any]]:
    def complete(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
        try:
            profile = (ctx.find_root().params or {}).get("profile")
            sess = config.session(profile)
            client = Api(sess.url, sess.token, timeout=2.0)
            client.conn.connect_timeout = 1.0
            items = client.get(path).get(key, [])
            client.close()
        except Exception:  # noqa: BLE001 - completion must never print an error
            return []
        names: set[str] = set()
        for item in items:
            value = item.get(field)
            for v in value if isinstance(value, list) else [value]:
                if isinstance(v, str | int) and str(v).startswith(incomplete):
                    names.add(str(v))
        return sorted(names)

    return complete


complete_servers = _complete("/api/v1/servers", "servers", "name")
complete_tags = _complete("/api/v1/servers", "servers", "tags")
complete_services = _complete("/api/v1/services", "services", "name")
complete_jobs = _complete("/api/v1/jobs?limit=50", "jobs", "id")


# -- options -----------------------------------------------------------------------------------
def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="print the API's JSON answer")(f)


def target_options(f: F) -> F:
    f = click.option("-a", "--all", "all_", is_flag=True, help="every joined server")(f)
    f = click.option(
        "-t",
        "--tag",
        "tags",
        multiple=True,
        metavar="TAG",
        shell_complete=complete_tags,
        help="servers with this tag (repeat, or comma-separate)",
    )(f)
    f = click.option(
        "-s",
        "--server",
        "servers",
        multiple=True,
        metavar="NAME",
        shell_complete=complete_servers,
        help="a server by name; repeat, comma-separate, or a set like web[1-4]",
    )(f)
    return f


def targets_from(kw: dict[str, Any], what: str) -> Targets:
    return Targets.parse(
        list(kw.pop("servers", ())), list(kw.pop("tags", ())), bool(kw.pop("all_", False))
    ).require(what)


def job_options(f: F) -> F:
    """How a job is shown: the same options on exec, services operations, jobs follow…"""
    opts = [
        click.option(
            "-b", "--group", is_flag=True, help="fold identical output of several hosts together"
        ),
        click.option("--json", "as_json", is_flag=True, help="print the finished job as JSON"),
        click.option("-q", "--quiet", is_flag=True, help="no summary when every host is ok"),
        click.option("-N", "--no-prefix", is_flag=True, help="do not prefix lines with the host"),
        click.option(
            "--color",
            type=click.Choice(["auto", "always", "never"]),
            default="auto",
            show_default=True,
            help="colour host names and states (auto: on a terminal, unless NO_COLOR is set)",
        ),
        click.option("--no-wait", is_flag=True, help="print the job id and return at once"),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def no_cancel_option(f: F) -> F:
    return click.option(
        "--no-cancel", is_flag=True, help="on Ctrl-C leave the job running (default: cancel it)"
    )(f)


def job_opts_from(kw: dict[str, Any]) -> JobOptions:
    return JobOptions(
        group=kw.pop("group", False),
        json=kw.pop("as_json", False),
        quiet=kw.pop("quiet", False),
        prefix=not kw.pop("no_prefix", False),
        colour=kw.pop("color", "auto"),
        no_wait=kw.pop("no_wait", False),
        no_cancel=kw.pop("no_cancel", False),
    )


# -- lookups -----------------------------------------------------------------------------------
def server_list(client: Api, removed: bool = False) -> list[dict[str, Any]]:
    answer = client.servers("removed=1" if removed else "")
    return list(answer.get("servers", []))


def find_server(client: Api, name: str) -> dict[str, Any]:
    """A live server by name (or by id when NAME is a number no server is called)."""
    servers = server_list(client)
    for s in servers:
        if s.get("name") == name:
            return s
    if name.isdigit():
        for s in servers:
            if s.get("id") == int(name):
                return s
    raise ApiError(404, "not_found", f"no server named {name!r}")


def service_path(name: str, *rest: str) -> str:
    return "/api/v1/services/" + "/".join([quote_path(name), *rest])


def job_id_arg(value: str) -> int:
    if not value.isdigit() or len(value) > 18:
        raise UsageError(f"job id {value!r} must be a number")
    return int(value)


EXAMPLES_HINT = "Examples:"


def tags_of(tags: tuple[str, ...] | list[str]) -> list[str]:
    """Tags as given: repeated options, each maybe comma-separated."""
    return sorted({t.strip() for arg in tags for t in arg.split(",") if t.strip()})

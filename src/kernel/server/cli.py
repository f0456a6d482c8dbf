"""``kernel-server``: run the server, migrate the database, add users (ARCHITECTURE.md §7)."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from flask import Flask

from kernel.exceptions import KernelError
from kernel.server.auth.roles import ROLES
from kernel.server.components import components


def _app(migrate: bool = True) -> Flask:
    from .app import create_app

    try:
        return create_app({"MIGRATE": migrate})
    except (KernelError, OSError) as e:
        raise click.ClickException(str(e)) from None


@click.group(invoke_without_command=True)
@click.option(
    "--listen",
    metavar="HOST:PORT",
    help="address to serve on (env KERNEL_LISTEN, default 0.0.0.0:8002)",
)
@click.pass_context
def main(ctx: click.Context, listen: str | None) -> None:
    """Kernel server. Without a command: run it (web, API, job runner)."""
    if ctx.invoked_subcommand is None:
        from .serve import serve

        try:
            from kernel.server.core import process

            app = _app()
            process.tune()  # a connection per agent, a cheaper collector (core/process.py)
            sys.exit(serve(app, listen or app.config["LISTEN"]))
        except (KernelError, OSError) as e:
            raise click.ClickException(str(e)) from None


@main.group()
def db() -> None:
    """Database maintenance."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply all Alembic migrations (also done at every start)."""
    from kernel.server.models.migrate import current_revision

    app = _app(migrate=True)
    rev = current_revision(components(app).db.engine)
    click.echo(f"database is at revision {rev}")


@main.command("create-user")
@click.argument("name")
@click.option("--role", type=click.Choice(list(reversed(ROLES))), required=True)
@click.option(
    "--password-stdin",
    is_flag=True,
    help="read the password from stdin (otherwise one is generated and printed)",
)
def create_user_cmd(name: str, role: str, password_stdin: bool) -> None:
    """Add a user."""
    from kernel.names import NAME_RE
    from kernel.server.auth.credentials import new_password
    from kernel.server.auth.users import create_user

    if not NAME_RE.fullmatch(name):
        raise click.BadParameter("letters, digits, '_', '.', '@', '-' (max 64)", param_hint="NAME")
    password = sys.stdin.readline().rstrip("\n") if password_stdin else new_password()
    try:
        password.encode("utf-8")
    except UnicodeEncodeError:
        raise click.ClickException("the password on stdin is not valid UTF-8") from None
    app = _app()
    try:
        with components(app).db.session() as s:
            create_user(s, name, role, password)
    except KernelError as e:
        raise click.ClickException(e.message) from None
    click.echo(f"created {role} {name!r}")
    if not password_stdin:
        click.echo(f"password: {password}")


@main.command("import-legacy")
@click.argument("checkout", metavar="DIR", type=click.Path(path_type=Path))
@click.option("--dry-run", is_flag=True, help="show what would be done; change nothing")
@click.option(
    "--url",
    metavar="URL",
    help="the address the hosts reach this server at, for their install commands "
    "(default: the URL setting)",
)
@click.option(
    "--token-ttl",
    type=click.IntRange(60, 30 * 86400),
    metavar="SECONDS",
    help="how long each install command works (default: the ENROLL_TOKEN_TTL setting)",
)
@click.option(
    "--run-init",
    is_flag=True,
    help="run the original's init scripts on the machines when they join (default: they "
    "count as run, as the original ran them)",
)
def import_legacy_cmd(
    checkout: Path, dry_run: bool, url: str | None, token_ttl: int | None, run_init: bool
) -> None:
    """Bring an original Kernel installation over: DIR is the original server's checkout.

    Its machines (machine_list.txt) become pending servers, each with the command that
    replaces its Go agent by Kernel's; static/service/* and static/init/* are copied into
    the data dir. Running it again changes nothing. See docs/migrating.md.
    """
    from .legacy_import import run_import

    try:
        lines = run_import(
            checkout, dry_run=dry_run, url=url, token_ttl=token_ttl, run_init=run_init
        )
        for line in lines:
            click.echo(line)
    except (KernelError, OSError) as e:
        raise click.ClickException(getattr(e, "message", None) or str(e)) from None

"""``kernel-server``: run the server, migrate the database, add users (ARCHITECTURE.md §7)."""

from __future__ import annotations

import sys

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

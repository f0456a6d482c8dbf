"""``kernel login``, ``logout``, ``whoami``: API tokens kept in the user's config file."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from . import config
from .api import Api
from .errors import AuthError, CliError, ServerUnreachable, UsageError
from .http1 import parse_url
from .options import CONTEXT, json_option, obj, print_json

LOGIN_HELP = """Log in to the Kernel server at URL and keep an API token for later commands.

Asks for the user name and password (or reads the password from stdin with
--password-stdin), trades them for a token (POST /api/v1/auth/token) and saves it in
~/.config/kernel/config.json (mode 0600; KERNEL_CONFIG names another file) under the
profile given with --profile (default: 'default'). The password is not stored.

\b
Examples:
  kernel login https://kernel.example
  kernel --profile lab login http://10.0.0.5:8002 -u ann
  echo "$PASSWORD" | kernel login https://kernel.example -u ci --password-stdin
"""


@click.command(
    "login",
    short_help="Log in to a Kernel server and save a token.",
    help=LOGIN_HELP,
    context_settings=CONTEXT,
)
@click.argument("url")
@click.option("-u", "--user", metavar="NAME", help="user name (asked when not given)")
@click.option("--password-stdin", is_flag=True, help="read the password from stdin's first line")
@click.option("--token-name", default="cli", show_default=True, help="label of the new token")
def login(url: str, user: str | None, password_stdin: bool, token_name: str) -> int:
    target = parse_url(url)
    profile = config.profile_name(obj().profile)
    interactive = sys.stdin.isatty() and not password_stdin
    if user is None:
        if not sys.stdin.isatty():
            raise UsageError("give the user name with --user (no terminal to ask on)")
        user = click.prompt("User", default=os.environ.get("USER") or None)
    if password_stdin:
        line = sys.stdin.buffer.readline()
        try:
            password = line.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            raise UsageError("the password on stdin is not valid UTF-8") from None
    elif interactive:
        password = click.prompt("Password", hide_input=True)
    else:
        raise UsageError("no terminal to ask the password on: use --password-stdin")
    if not password:
        raise UsageError("the password is empty")
    client = Api(target, None)
    try:
        answer = client.post(
            "/api/v1/auth/token", {"username": user, "password": password, "name": token_name}
        )
    finally:
        client.close()
    if not isinstance(answer, dict) or not isinstance(answer.get("token"), str):
        raise ServerUnreachable(f"{target.base} did not answer with a token; is it Kernel?")
    data = config.load()
    profiles = config.profiles(data)
    old = profiles.get(profile)
    profiles[profile] = {
        "url": target.base,
        "token": answer["token"],
        "token_id": answer.get("id"),
        "user": answer.get("user", user),
        "role": answer.get("role"),
    }
    data["profiles"] = profiles
    path = config.save(data)
    if old and old.get("token") and old.get("url"):
        _revoke(old, quiet=True)  # the profile's previous token is not needed any more
    click.echo(
        f"logged in to {target.base} as {profiles[profile]['user']} "
        f"({profiles[profile]['role']}); token saved in {path} (profile {profile!r})",
        err=True,
    )
    return 0


LOGOUT_HELP = """Forget the saved token of a profile and revoke it on the server.

\b
Examples:
  kernel logout
  kernel --profile lab logout
"""


@click.command(
    "logout",
    short_help="Forget and revoke the saved token.",
    help=LOGOUT_HELP,
    context_settings=CONTEXT,
)
def logout() -> int:
    profile = config.profile_name(obj().profile)
    data = config.load()
    profiles = config.profiles(data)
    entry = profiles.pop(profile, None)
    if entry is None:
        raise CliError(f"not logged in with profile {profile!r} (nothing to do)")
    data["profiles"] = profiles
    config.save(data)
    revoked = _revoke(entry, quiet=False)
    where = entry.get("url", "?")
    click.echo(
        f"logged out of {where} (profile {profile!r})"
        + ("" if revoked else "; the token could not be revoked on the server"),
        err=True,
    )
    return 0


def _revoke(entry: dict[str, Any], *, quiet: bool) -> bool:
    token, token_id, url = entry.get("token"), entry.get("token_id"), entry.get("url")
    if not isinstance(token, str) or not isinstance(url, str) or not isinstance(token_id, int):
        return False
    client = Api(parse_url(url), token, timeout=10.0)
    try:
        client.delete(f"/api/v1/tokens/{token_id}")
        return True
    except AuthError:
        return True  # already revoked or expired: nothing left to do
    except CliError as e:
        if not quiet:
            click.echo(f"kernel: warning: {e.message}", err=True)
        return False
    finally:
        client.close()


WHOAMI_HELP = """Show who you are logged in as, where, and with which role.

\b
Examples:
  kernel whoami
  kernel whoami --json
"""


@click.command(
    "whoami",
    short_help="Who you are logged in as, and where.",
    help=WHOAMI_HELP,
    context_settings=CONTEXT,
)
@json_option
def whoami(as_json: bool) -> int:
    o = obj()
    sess = config.session(o.profile)
    me = o.api().get("/api/v1/me")
    me.pop("csrf_token", None)
    if as_json:
        print_json({**me, "url": sess.url.base, "profile": sess.profile, "source": sess.source})
        return 0
    click.echo(f"{me.get('name')} ({me.get('role')}) at {sess.url.base} — {sess.source}")
    return 0

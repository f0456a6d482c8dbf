"""The click command tree: every command but the exec fast path's (main.py), and the place
where click's own errors become one line and an exit status."""

from __future__ import annotations

import sys
from typing import Any

import click

from . import alerts, auth, enroll, files, fleet, initscripts, jobs, schedules, servers, services
from .errors import EXIT_CODES, CliError, UsageError
from .exec_args import COLOURS, ExecArgs
from .execute import run_exec
from .options import (
    CONTEXT,
    Obj,
    add_profile_option,
    job_options,
    no_cancel_option,
    target_options,
)

ROOT_HELP = """Kernel's command line: run commands on your servers, deploy services, watch jobs.

It talks to a Kernel server's REST API: log in once (`kernel login URL`), or set
KERNEL_URL and KERNEL_TOKEN for scripts and CI. Every read command takes --json.

\b
Examples:
  kernel login https://kernel.example
  kernel status
  kernel exec --all -- uptime
  kernel exec -t web -b -- 'systemctl is-active nginx'
  kernel services deploy sums -s web1
  kernel schedules add backup --cron '0 3 * * *' --tz UTC -t db -- /usr/local/bin/backup
  kernel files push app.conf /etc/app/app.conf -t web
  kernel jobs list
  kernel alerts list --state open

\b
Exit status:
""" + "\n".join(f"  {code:<4} {text}" for code, text in EXIT_CODES.items())


@click.group(context_settings=CONTEXT, help=ROOT_HELP)
@click.option(
    "--profile",
    metavar="NAME",
    envvar="KERNEL_PROFILE",
    help="the saved login to use (default: 'default'; env KERNEL_PROFILE)",
)
@click.version_option(package_name="kernel-cluster", prog_name="kernel")
@click.pass_context
def cli(ctx: click.Context, profile: str | None) -> None:
    ctx.obj = Obj(profile)
    ctx.call_on_close(ctx.obj.close)


EXEC_HELP = """Run COMMAND on the chosen servers, streaming each line prefixed by its host.

COMMAND's words are joined with spaces and run by bash on each server, as ssh does: quote
what the remote shell should see ('$(hostname)' is expanded there, "$(hostname)" here).
Everything after the first word that is not an option belongs to COMMAND; `--` makes
that explicit.

The exit status is 0 when every host succeeded, 4 when one failed (non-zero exit, signal,
timeout), 3 when one was unreachable; the summary on stderr says which. Ctrl-C cancels
the job (--no-cancel: leaves it running) and exits with 130.

\b
Examples:
  kernel exec -s web1 -- uptime
  kernel exec -s 'web[1-4]' -t db -- df -h /
  kernel exec --all --group -- cat /etc/debian_version
  kernel exec -t web --script deploy.sh -- --fast      (bash -s -- --fast)
  kernel exec --all --parallel 10 --timeout 60 -- apt-get -y upgrade
  kernel exec -s web1 --json -- hostname | jq -r '.runs[].stdout'
"""


@cli.command(
    "exec",
    short_help="Run a command or script on servers, output live.",
    help=EXEC_HELP,
    context_settings={**CONTEXT, "allow_interspersed_args": False},
)
@target_options
@click.option("--script", metavar="FILE", help="send FILE (- for stdin) to `bash -s` on each host")
@click.option("--timeout", type=float, metavar="SECONDS", help="per host (default 600)")
@click.option(
    "-p", "--parallel", type=int, metavar="N", help="at most N hosts at a time (in batches)"
)
@click.option("-e", "--env", multiple=True, metavar="NAME=VALUE", help="environment (repeat)")
@click.option("--cwd", metavar="DIR", help="working directory on the hosts")
@click.option("--title", help="the job's title (default: the command)")
@job_options
@no_cancel_option
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def exec_cmd(ctx: click.Context, command: tuple[str, ...], **kw: Any) -> int:
    return run_exec(exec_args_from(ctx, command, kw))


def exec_args_from(ctx: click.Context, command: tuple[str, ...], kw: dict[str, Any]) -> ExecArgs:
    """The same ExecArgs the fast path (exec_args.parse_fast) builds; a test compares them."""
    from .follow import JobOptions

    timeout, parallel = kw["timeout"], kw["parallel"]
    if timeout is not None and not 0 < timeout < float("inf"):
        raise click.BadParameter("must be a positive number of seconds", param_hint="--timeout")
    if parallel is not None and parallel < 1:
        raise click.BadParameter("must be at least 1", param_hint="--parallel")
    for e in kw["env"]:
        if "=" not in e or e.startswith("="):
            raise click.BadParameter(f"{e!r} is not NAME=VALUE", param_hint="--env")
    assert kw["color"] in COLOURS
    root = ctx.find_root().obj
    return ExecArgs(
        profile=root.profile if root else None,
        servers=list(kw["servers"]),
        tags=list(kw["tags"]),
        all=kw["all_"],
        command=list(command),
        script=kw["script"],
        timeout=timeout,
        parallel=parallel,
        env=list(kw["env"]),
        cwd=kw["cwd"],
        title=kw["title"],
        opts=JobOptions(
            group=kw["group"],
            json=kw["as_json"],
            quiet=kw["quiet"],
            prefix=not kw["no_prefix"],
            colour=kw["color"],
            no_wait=kw["no_wait"],
            no_cancel=kw["no_cancel"],
        ),
    )


COMPLETION_HELP = """Print the shell completion script for SHELL.

\b
Examples:
  kernel completion bash > ~/.local/share/bash-completion/completions/kernel
  kernel completion zsh > "${fpath[1]}/_kernel"
  kernel completion fish > ~/.config/fish/completions/kernel.fish
"""


@cli.command(
    "completion",
    short_help="Print a shell completion script.",
    help=COMPLETION_HELP,
    context_settings=CONTEXT,
)
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> int:
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    assert cls is not None
    click.echo(cls(cli, {}, "kernel", "_KERNEL_COMPLETE").source())
    return 0


for command in (
    auth.login,
    auth.logout,
    auth.whoami,
    fleet.status,
    servers.servers,
    enroll.enroll,
    services.services,
    jobs.jobs,
    initscripts.init,
    schedules.schedules,
    files.files,
    alerts.alerts,
):
    cli.add_command(command)
for command in cli.commands.values():
    add_profile_option(command)


def run_click(args: list[str]) -> int:
    """Run the click tree with our error handling (click's usage errors as one line)."""
    try:
        rv = cli.main(args, prog_name="kernel", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as e:  # `kernel servers`: help, on stdout
        click.echo(e.ctx.get_help() if e.ctx else "")
        return 0
    except click.UsageError as e:
        where = f" (see `{e.ctx.command_path} --help`)" if e.ctx else ""
        raise UsageError(e.format_message() + where) from None
    except click.exceptions.Exit as e:
        return int(e.exit_code)
    except click.Abort as e:  # click turns Ctrl-C (and our SIGTERM) into Abort
        cause = e.__context__
        raise (cause if isinstance(cause, KeyboardInterrupt) else KeyboardInterrupt()) from None
    except click.ClickException as e:
        raise CliError(e.format_message()) from None
    except OSError as e:
        if isinstance(e, BrokenPipeError):
            raise
        raise CliError(f"{e.strerror or e}") from None
    if rv is None:
        return 0
    if isinstance(rv, int):
        return rv
    sys.stderr.write(f"kernel: unexpected result {rv!r}\n")
    return 1

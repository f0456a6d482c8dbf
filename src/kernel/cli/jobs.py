"""``kernel jobs list|show|follow|cancel|rerun``."""

from __future__ import annotations

from typing import Any

import click

from . import errors
from .follow import watch
from .nodeset import fold
from .options import (
    CONTEXT,
    api,
    complete_jobs,
    job_id_arg,
    job_options,
    job_opts_from,
    json_option,
    no_cancel_option,
    out,
    print_json,
)
from .render import Sink
from .tables import ago, duration, table, when

JOBS_HELP = """Jobs: every command, service operation and init script run, with one run per server.

\b
Examples:
  kernel jobs list
  kernel jobs show 42 --output
  kernel jobs follow 42
  kernel jobs rerun 42          (the runs that did not succeed)
  kernel jobs cancel 42
"""

STATES = ["queued", "running", "finished", "cancelled"]


@click.group(
    "jobs",
    short_help="Jobs: list, show, follow, cancel, rerun.",
    help=JOBS_HELP,
    context_settings=CONTEXT,
    no_args_is_help=True,
)
def jobs() -> None:
    pass


@jobs.command("list", context_settings=CONTEXT)
@click.option("--state", type=click.Choice(STATES), help="only jobs in this state")
@click.option("-n", "--limit", type=click.IntRange(1, 500), default=20, show_default=True)
@click.option("--before", type=click.IntRange(1), metavar="ID", help="jobs older than this id")
@json_option
def list_cmd(state: str | None, limit: int, before: int | None, as_json: bool) -> int:
    """Recent jobs, newest first.

    \b
    Examples:
      kernel jobs list
      kernel jobs list --state running --json
    """
    query = f"?limit={limit}" + (f"&state={state}" if state else "")
    query += f"&before={before}" if before else ""
    answer = api().get("/api/v1/jobs" + query)
    if as_json:
        print_json(answer)
        return 0
    style = out().style
    rows = [
        [
            j.get("id"),
            j.get("state"),
            _kind(j),
            j.get("created_by"),
            ago(j.get("created_at")),
            j.get("title") or j.get("cmd"),
        ]
        for j in answer.get("jobs", [])
    ]
    click.echo(
        table(
            ["ID", "STATE", "KIND", "BY", "CREATED", "TITLE"], rows, style, paint={1: style.state}
        )
    )
    return 0


def _kind(job: dict[str, Any]) -> str:
    meta = job.get("meta") or {}
    if job.get("kind") == "service":
        return f"service {meta.get('op', '')} {meta.get('service', '')}".strip()
    if job.get("kind") == "init":
        return f"init {meta.get('script', '')}".strip()
    if job.get("kind") == "schedule":
        return f"schedule {meta.get('schedule', '')}".strip()
    if job.get("kind") == "file":
        return f"file push {meta.get('path', '')}".strip()
    return str(job.get("kind"))


@jobs.command("show", context_settings=CONTEXT)
@click.argument("job_id", metavar="ID", shell_complete=complete_jobs)
@click.option("-o", "--output", is_flag=True, help="also each run's stdout and stderr")
@json_option
def show(job_id: str, output: bool, as_json: bool) -> int:
    """A job and its runs: state, exit code, duration, error (and output with --output).

    \b
    Examples:
      kernel jobs show 42
      kernel jobs show 42 --output
      kernel jobs show 42 --json | jq -r '.runs[] | "\\(.server) \\(.state)"'
    """
    jid = job_id_arg(job_id)
    job = api().get(f"/api/v1/jobs/{jid}" + ("?output=1" if output or as_json else ""))
    if as_json:
        print_json(job)
        return 0
    o = out()
    style = o.style
    click.echo(f"job {job['id']}: {style.state(str(job.get('state')))}  {_kind(job)}")
    click.echo(
        f"command: {job.get('cmd')}"
        + ("   (with a script on stdin)" if job.get("has_stdin") else "")
    )
    click.echo(
        f"by {job.get('created_by')} at {when(job.get('created_at'))}"
        + (f", rerun of job {job['parent_id']}" if job.get("parent_id") else "")
    )
    rows = [
        [
            r.get("server"),
            r.get("state"),
            "-" if r.get("exit_code") is None else r.get("exit_code"),
            duration(r.get("duration")),
            r.get("error") or "",
        ]
        for r in job.get("runs", [])
    ]
    click.echo(
        table(["SERVER", "STATE", "EXIT", "TOOK", "ERROR"], rows, style, paint={1: style.state})
    )
    if output:
        sink = Sink(o)
        for r in job.get("runs", []):
            for stream in ("stdout", "stderr"):
                if r.get(stream):
                    sink.output(r["id"], r["server"], stream, r[stream])
            sink.run_ended(r["id"], r["server"])
            if r.get("truncated"):
                o.note(f"{r['server']}: (output truncated on the server)")
        o.flush()
    return 0


@jobs.command("follow", context_settings=CONTEXT)
@click.argument("job_id", metavar="ID", shell_complete=complete_jobs)
@job_options
def follow(job_id: str, **kw: Any) -> int:
    """Watch a job to its end: its output so far, then live, then the summary; the exit
    status as for `kernel exec`. Ctrl-C stops watching and leaves the job running.

    \b
    Examples:
      kernel jobs follow 42
      kernel jobs follow 42 --group
    """
    jid = job_id_arg(job_id)
    client = api()
    job = client.get(f"/api/v1/jobs/{jid}")
    opts = job_opts_from(kw)
    opts.no_wait = False
    return watch(client, [job], opts, owner=False)


@jobs.command("cancel", context_settings=CONTEXT)
@click.argument("job_id", metavar="ID", shell_complete=complete_jobs)
@json_option
def cancel(job_id: str, as_json: bool) -> int:
    """Cancel a job: queued runs end now, running ones are stopped on their hosts.

    \b
    Example:
      kernel jobs cancel 42
    """
    jid = job_id_arg(job_id)
    job = api().post(f"/api/v1/jobs/{jid}/cancel")
    if as_json:
        print_json(job)
        return 0
    runs = job.get("runs", [])
    stopping = [r["server"] for r in runs if r.get("state") == "running"]
    ended = len(runs) - len(stopping)
    what = f"stopping it on {fold(stopping)}" if stopping else "no run was still going"
    click.echo(f"cancelled job {jid}: {what} ({ended} of {len(runs)} runs had ended)", err=True)
    return errors.OK


@jobs.command("rerun", context_settings=CONTEXT)
@click.argument("job_id", metavar="ID", shell_complete=complete_jobs)
@job_options
@no_cancel_option
def rerun(job_id: str, **kw: Any) -> int:
    """Run a command job again on the servers whose run did not succeed, and follow it.

    \b
    Examples:
      kernel jobs rerun 42
      kernel jobs rerun 42 --no-wait
    """
    jid = job_id_arg(job_id)
    client = api()
    job = client.post(f"/api/v1/jobs/{jid}/rerun")
    opts = job_opts_from(kw)
    if not opts.json and not opts.no_wait:
        out().note(f"job {job['id']}: rerun of job {jid} on {len(job.get('runs', []))} host(s)")
    return watch(client, [job], opts)

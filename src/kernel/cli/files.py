"""``kernel files push|get|list|rm``: a file from here onto many servers (uploaded to the
server, then written on each host by a job), and a file from one server to here."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from .api import quote_path
from .errors import UsageError
from .follow import watch
from .http1 import Upload
from .options import (
    CONTEXT,
    api,
    job_options,
    job_opts_from,
    json_option,
    no_cancel_option,
    out,
    print_json,
    target_options,
    targets_from,
)
from .tables import ago, size, table

FILES_HELP = """Files: push a file from here to many servers, get one from a server.

A push uploads the file to the Kernel server once (up to its FILES_MAX_UPLOAD, 1 GiB by
default), then each chosen server downloads it and writes it atomically (a temporary file
beside PATH, checked by SHA-256, then renamed over PATH): PATH is the old file or the whole
new one, never a part. It is a job, followed live like `kernel exec`.

\b
Examples:
  kernel files push app.conf /etc/app/app.conf -t web --mode 0640 --owner root:app
  kernel files push build.tgz /opt/releases/build.tgz --all
  kernel files get web1 /etc/nginx/nginx.conf -o nginx.conf
  kernel files get web1 /var/log/syslog | tail
"""


@click.group(
    "files",
    short_help="Files: push to servers, get from one.",
    help=FILES_HELP,
    context_settings=CONTEXT,
    no_args_is_help=True,
)
def files() -> None:
    pass


@files.command("push", context_settings=CONTEXT)
@click.argument("local", metavar="FILE", type=click.Path(dir_okay=False, allow_dash=False))
@click.argument("path", metavar="PATH")
@target_options
@click.option("-m", "--mode", default="0644", show_default=True, help="octal mode on the hosts")
@click.option("-o", "--owner", metavar="USER[:GROUP]", help="owner on the hosts (default root)")
@click.option("--timeout", type=click.FloatRange(1), metavar="SECONDS", help="per host (1800)")
@job_options
@no_cancel_option
def push(local: str, path: str, mode: str, owner: str | None, timeout: float | None,
         **kw: Any) -> int:  # fmt: skip
    """Write FILE to PATH (absolute) on the chosen servers, with --mode and --owner.

    A host where PATH's directory does not exist fails with that message (exit 4, as any
    failed run); the others go on.

    \b
    Examples:
      kernel files push app.conf /etc/app/app.conf -s web1 -s web2
      kernel files push app.conf /etc/app/app.conf -t web --mode 0640 --owner root:app
    """
    targets = targets_from(kw, "files push")
    opts = job_opts_from(kw)
    if not path.startswith("/"):
        raise UsageError(f"PATH {path!r} must be absolute (the path on the servers)")
    client = api()
    try:
        fh = open(local, "rb")  # closed below, after the upload
    except OSError as e:
        raise UsageError(f"cannot read {local}: {e.strerror}") from None
    with fh:
        length = os.fstat(fh.fileno()).st_size
        cap = client.get("/api/v1/files").get("max_upload")
        if isinstance(cap, int) and length > cap:
            raise UsageError(
                f"{local} is {size(length)} ({length} bytes): more than the server takes "
                f"({size(cap)}, its FILES_MAX_UPLOAD)"
            )
        name = os.path.basename(local)
        o = out(opts.colour)
        if not opts.json and not opts.quiet and length >= 8 * 1024 * 1024:
            o.note(f"uploading {name} ({size(length)})…")
            o.flush()
        up = client.upload(f"/api/v1/files?name={quote_path(name)}", Upload(fh, length, local))
    body: dict[str, Any] = {"targets": targets.body(), "path": path, "mode": mode}
    if owner is not None:
        body["owner"] = owner
    if timeout is not None:
        body["timeout"] = timeout
    job = client.post(f"/api/v1/files/{up['id']}/push", body)
    return watch(client, [job], opts)


@files.command("get", context_settings=CONTEXT)
@click.argument("server", metavar="SERVER")
@click.argument("path", metavar="PATH")
@click.option("-o", "--output", metavar="FILE", help="write it here (default: standard output)")
def get(server: str, path: str, output: str | None) -> int:
    """The file at PATH on SERVER: to standard output, or to FILE with -o.

    The server's FILES_MAX_FETCH caps its size (4 MiB by default: the file comes back as
    text through the agent); a larger one is refused with its size.

    \b
    Examples:
      kernel files get web1 /etc/hosts
      kernel files get web1 /etc/nginx/nginx.conf -o nginx.conf
    """
    client = api()
    query = f"?server={quote_path(server)}&path={quote_path(path)}"
    data, _headers = client.get_bytes("/api/v1/files/fetch" + query, limit=1024**3)
    if output is None or output == "-":
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return 0
    try:
        with open(output, "wb") as fh:
            fh.write(data)
    except OSError as e:
        raise UsageError(f"cannot write {output}: {e.strerror}") from None
    click.echo(f"{server}:{path} → {output} ({size(len(data))})", err=True)
    return 0


@files.command("list", context_settings=CONTEXT)
@json_option
def list_cmd(as_json: bool) -> int:
    """Files uploaded for pushes and still kept on the server (FILES_KEEP), and its caps.

    \b
    Example:
      kernel files list
    """
    answer = api().get("/api/v1/files")
    if as_json:
        print_json(answer)
        return 0
    rows = [
        [f.get("id"), f.get("name") or "-", size(f.get("size")), f.get("sha256", "")[:16],
         f.get("created_by"), ago(f.get("created_at"))]
        for f in answer.get("files", [])
    ]  # fmt: skip
    click.echo(table(["ID", "NAME", "SIZE", "SHA256", "BY", "UPLOADED"], rows, out().style))
    click.echo(
        f"caps: upload {size(answer.get('max_upload'))}, get {size(answer.get('max_fetch'))}",
        err=True,
    )
    return 0


@files.command("rm", context_settings=CONTEXT)
@click.argument("file_id", metavar="ID")
@json_option
def rm(file_id: str, as_json: bool) -> int:
    """Delete an uploaded file from the server (pushes still downloading it fail).

    \b
    Example:
      kernel files rm 3f9a0c…
    """
    gone = api().delete(f"/api/v1/files/{quote_path(file_id)}")
    if as_json:
        print_json(gone)
    else:
        click.echo(f"deleted {gone['id']} ({gone.get('name') or '-'})", err=True)
    return 0

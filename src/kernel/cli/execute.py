"""``kernel exec``: a command or a script on many servers, as one job (or one per batch of
``--parallel``), followed live to its end."""

from __future__ import annotations

import sys
import time

from . import config
from .api import Api
from .errors import UsageError
from .exec_args import ExecArgs
from .follow import watch
from .targets import Targets, choose

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from typing import Any


def run_exec(a: ExecArgs) -> int:
    targets = Targets.parse(a.servers, a.tags, a.all).require("exec")
    body = job_body(a, targets)
    if a.parallel and a.opts.no_wait:
        raise UsageError("--no-wait and --parallel do not go together (batches wait in turn)")
    started = time.monotonic()
    sess = config.session(a.profile)
    api = Api(sess.url, sess.need_token())
    try:
        jobs: Iterable[dict[str, Any]]
        if a.parallel:
            jobs = _batches(api, body, targets, a.parallel)
        else:
            jobs = [api.post("/api/v1/jobs", body)]
        return watch(api, jobs, a.opts, started=started)
    finally:
        api.close()


def job_body(a: ExecArgs, targets: Targets) -> dict[str, Any]:
    """The ``POST /api/v1/jobs`` body. Words of COMMAND are joined by spaces, as ssh does:
    the remote shell sees exactly the text typed (``'$(hostname)'`` runs there)."""
    if a.script is not None:
        stdin = read_script(a.script)
        cmd = "bash -s"
        if a.command:
            import shlex

            cmd += " -- " + " ".join(shlex.quote(w) for w in a.command)
    else:
        if not a.command:
            raise UsageError("give the command to run after --, or --script FILE")
        stdin = None
        cmd = " ".join(a.command)
    if not cmd.strip():
        raise UsageError("the command is empty")
    body: dict[str, Any] = {"cmd": cmd, "targets": targets.body()}
    if stdin is not None:
        body["stdin"] = stdin
    if a.timeout is not None:
        body["timeout"] = a.timeout
    if a.env:
        body["env"] = dict(e.split("=", 1) for e in a.env)
    if a.cwd is not None:
        body["cwd"] = a.cwd
    if a.title is not None:
        body["title"] = a.title
    return body


def read_script(path: str) -> str:
    try:
        if path == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(path, "rb") as fh:
                data = fh.read()
    except OSError as e:
        raise UsageError(f"cannot read the script {path}: {e.strerror}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(
            f"the script {path} is not UTF-8 text (byte {e.start}); Kernel sends scripts as text"
        ) from None


def _batches(
    api: Api, body: dict[str, Any], targets: Targets, size: int
) -> Iterator[dict[str, Any]]:
    """``--parallel N``: the API runs every run of a job at once (up to the server's
    JOB_CONCURRENCY), so N hosts at a time means one job per batch of N, each started when
    the one before has ended (Ansible's ``serial``)."""
    servers = api.servers()["servers"]
    names, skipped = choose(servers, targets)
    for start in range(0, len(names), size):
        batch = names[start : start + size]
        job = api.post("/api/v1/jobs", {**body, "targets": {"servers": batch}})
        yield {**job, "skipped": skipped} if start == 0 else job

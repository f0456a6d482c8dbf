"""Following a job to its end through its live events, for every command that runs one
(exec, services operations, jobs follow/rerun, init scripts)."""

from __future__ import annotations

import json
import time

from . import errors
from .api import Api
from .errors import ApiError, CliError
from .output import Out, Progress
from .render import FINAL, GroupSink, Quiet, Sink, summary

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any


class Followed:
    """A job as its events describe it: the runs' states and the output seen of each."""

    def __init__(self, job: dict[str, Any]) -> None:
        self.id = job.get("id")
        self.state = str(job.get("state"))
        self.runs: dict[str, dict[str, Any]] = {}
        self.seen: dict[tuple[str, str], int] = {}
        self.snapshots = 0
        self.ended_before = False  # the job had ended when its stream was opened
        self.unaligned: set[str] = set()  # runs shown from a partial snapshot
        for r in job.get("runs") or []:
            self.runs[str(r["id"])] = {k: v for k, v in r.items() if k not in ("stdout", "stderr")}

    def run_list(self) -> list[dict[str, Any]]:
        return sorted(self.runs.values(), key=lambda r: str(r.get("server")))

    def counts(self) -> tuple[int, int]:
        done = [r for r in self.runs.values() if r.get("state") in FINAL]
        return len(done), sum(1 for r in done if r.get("state") != "ok")

    @property
    def ended(self) -> bool:
        return self.state in ("finished", "cancelled")


class Follower:
    """Reads a job's events and hands output to a Sink; `run` returns the Followed job."""

    def __init__(self, api: Api, out: Out, sink: Sink, *, progress: bool = True) -> None:
        self.api = api
        self.out = out
        self.sink = sink
        self.progress = progress

    def run(self, job: dict[str, Any]) -> Followed:
        f = Followed(job)
        bar = None
        if self.progress and self.out.err_tty and len(f.runs) > 1:
            bar = self.out.progress = Progress(self.out, len(f.runs))
            bar.update(*f.counts())
            self.out.flush()
        try:
            for type_, data in self.api.events(int(job["id"])):
                self._event(f, type_, data)
                if bar is not None:
                    bar.update(*f.counts())
                self.out.flush()
        finally:
            if bar is not None:
                bar.stop()
        if f.snapshots > 1 or f.ended_before:
            # The server's snapshot carries output only from its in-memory events: a job that
            # had ended before we came (events kept 10 min), or a stream reopened on a server
            # that restarted (a re-attached run stores its output at the end, without output
            # events), gets the rest from the stored job.
            self._snapshot(f, self.api.get(f"/api/v1/jobs/{job['id']}?output=1"))
        for run_id, r in f.runs.items():
            self.sink.run_ended(run_id, str(r.get("server")))
        self.sink.finish()
        self.out.flush()
        return f

    def _event(self, f: Followed, type_: str, data: dict[str, Any]) -> None:
        if type_ == "output":
            run_id = str(data.get("run"))
            stream = "stderr" if data.get("stream") == "stderr" else "stdout"
            text = str(data.get("data") or "")
            key = (run_id, stream)
            self.seen_add(f, key, len(text))
            self.sink.output(run_id, str(data.get("server")), stream, text)
        elif type_ == "run":
            run = data.get("run") or {}
            run_id = str(run.get("id"))
            f.runs.setdefault(run_id, {}).update(run)
            if run.get("state") in FINAL:
                self.sink.run_ended(run_id, str(run.get("server")))
        elif type_ == "snapshot":
            f.snapshots += 1
            snap = data.get("job") or {}
            if f.snapshots == 1 and snap.get("state") in ("finished", "cancelled"):
                f.ended_before = True
            self._snapshot(f, snap)
        elif type_ == "job":
            f.state = str((data.get("job") or {}).get("state", f.state))
        elif type_ == "end":
            f.state = str(data.get("state", "finished"))

    def seen_add(self, f: Followed, key: tuple[str, str], n: int) -> None:
        f.seen[key] = f.seen.get(key, 0) + n

    def _snapshot(self, f: Followed, job: dict[str, Any]) -> None:
        """The job so far (first event; again after a reconnect the server could not resume):
        print only the output not seen yet."""
        f.state = str(job.get("state", f.state))
        for run in job.get("runs") or []:
            run_id = str(run.get("id"))
            server = str(run.get("server"))
            if run.get("output_partial") and run.get("state") in FINAL:
                # Only the tail came with the snapshot; the stored run has all there is.
                run = {**run, **self.api.get(f"/api/v1/jobs/{f.id}/runs/{run_id}")}
                run["output_partial"] = False
            # What was printed of an unaligned run cannot be matched with stored output.
            skip = run_id in f.unaligned
            for stream in ("stdout", "stderr"):
                text = str(run.get(stream) or "")
                seen = f.seen.get((run_id, stream), 0)
                if skip:
                    continue
                if run.get("output_partial"):
                    # A run still going whose earlier output the server no longer holds in
                    # memory (nor has stored yet): show the tail, then follow it live.
                    if seen == 0 and text:
                        self.sink.output(run_id, server, stream, "[… earlier output not shown]\n")
                        self.sink.output(run_id, server, stream, text)
                    f.unaligned.add(run_id)
                elif len(text) > seen:
                    self.sink.output(run_id, server, stream, text[seen:])
                    f.seen[(run_id, stream)] = len(text)
            f.runs.setdefault(run_id, {}).update(
                {k: v for k, v in run.items() if k not in ("stdout", "stderr")}
            )
            if run.get("state") in FINAL:
                self.sink.run_ended(run_id, server)


class JobOptions:
    """How a command that starts or follows a job shows it (shared by all of them)."""

    __slots__ = ("colour", "group", "json", "no_cancel", "no_wait", "prefix", "quiet")

    def __init__(
        self,
        *,
        group: bool = False,
        json: bool = False,
        quiet: bool = False,
        prefix: bool = True,
        colour: str = "auto",
        no_wait: bool = False,
        no_cancel: bool = False,
    ) -> None:
        self.group, self.json, self.quiet, self.prefix = group, json, quiet, prefix
        self.colour, self.no_wait, self.no_cancel = colour, no_wait, no_cancel

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JobOptions) and all(
            getattr(self, k) == getattr(other, k) for k in self.__slots__
        )

    def __repr__(self) -> str:
        return "JobOptions(" + ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__) + ")"


def watch(
    api: Api,
    jobs: Iterable[dict[str, Any]],
    opts: JobOptions,
    *,
    owner: bool = True,
    out: Out | None = None,
    started: float | None = None,
) -> int:
    """Follow ``jobs`` one after the other (batches of ``--parallel``, or one job), print the
    output and a summary, and return the exit status. ``owner``: the command started the
    jobs, so Ctrl-C cancels them (unless ``--no-cancel``); otherwise it only stops watching.
    ``jobs`` may be a generator (each batch is created when the one before has ended);
    ``started`` is when the command began (``time.monotonic()``), for the summary."""
    out = out or Out(opts.colour)
    if opts.no_wait:
        for job in jobs:
            out.line(json.dumps(job) if opts.json else str(job["id"]))
        out.flush()
        return errors.OK
    sink: Sink = GroupSink(out) if opts.group else Sink(out, prefix=opts.prefix)
    if opts.json:
        sink = Quiet(out)
    started = time.monotonic() if started is None else started
    followed: list[Followed] = []
    current: dict[str, Any] | None = None
    try:
        for job in jobs:
            current = job
            if job.get("skipped") and not opts.json:
                from .nodeset import fold

                out.note(f"skipped (not joined yet): {fold(job['skipped'])}")
            followed.append(Follower(api, out, sink, progress=not opts.json).run(job))
            current = None
    except KeyboardInterrupt as e:
        word, status = errors.interruption(e)
        _interrupted(api, out, current, word, owner=owner and not opts.no_cancel)
        return status
    runs = [r for f in followed for r in f.run_list()]
    if opts.json:
        full = [api.get(f"/api/v1/jobs/{f.id}?output=1") for f in followed]
        out.line(json.dumps(full[0] if len(full) == 1 else {"jobs": full}, indent=2))
    status = errors.exit_status(str(r.get("state")) for r in runs)
    if not opts.quiet or status != errors.OK:
        ids = ", ".join(str(f.id) for f in followed)
        for line in summary(ids, runs, time.monotonic() - started, out.err_style):
            out.note(line)
    out.flush()
    return status


def _interrupted(api: Api, out: Out, job: dict[str, Any] | None, word: str, *, owner: bool) -> None:
    if out.progress is not None:
        out.progress.stop()
    if job is None:
        out.note(f"kernel: {word}")
    elif not owner:
        jid = job["id"]
        out.note(
            f"kernel: {word}; job {jid} is left running "
            f"(`kernel jobs follow {jid}` to watch it, `kernel jobs cancel {jid}` to stop it)"
        )
    else:
        jid = job["id"]
        try:
            api.conn.close()  # the event stream was cut in the middle
            done = api.post(f"/api/v1/jobs/{jid}/cancel")
            stopped = [r["server"] for r in done.get("runs", []) if r.get("state") == "running"]
            more = f"; stopping it on {len(stopped)} host(s)" if stopped else ""
            out.note(f"kernel: {word}; cancelled job {jid}{more}")
        except ApiError as e:
            if e.status == 409:
                out.note(f"kernel: {word}; job {jid} had already ended")
            else:
                out.note(f"kernel: {word}; could not cancel job {jid}: {e.message}")
        except (CliError, KeyboardInterrupt):
            out.note(
                f"kernel: {word}; job {jid} may still be running "
                f"(`kernel jobs cancel {jid}` stops it)"
            )
    out.flush()

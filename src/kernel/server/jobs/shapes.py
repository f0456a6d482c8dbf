"""Jobs and runs as the API shows them (jobs/schemas.py declares these shapes; built by hand
because every job event passes through here)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kernel.server.core.text import iso
from kernel.server.jobs import states
from kernel.server.models.jobs import Job, Run


def run_json(run: Run, *, output: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": run.id,
        "job_id": run.job_id,
        "server_id": run.server_id,
        "server": run.server_name,
        "state": run.state,
        "exit_code": run.exit_code,
        "signal": run.signal,
        "truncated": run.truncated,
        "error": run.error,
        "sent_at": iso(run.sent_at),
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "duration": run.duration,
    }
    if output:
        out["stdout"] = run.stdout
        out["stderr"] = run.stderr
    return out


def job_json(
    job: Job, runs: Iterable[Run] | None = None, *, output: bool = False
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": job.id,
        "kind": job.kind,
        "title": job.title,
        "cmd": job.cmd,
        "has_stdin": job.stdin is not None,
        "env": sorted((job.env or {}).keys()),  # values may be secrets: names only
        "cwd": job.cwd,
        "timeout": job.timeout,
        "targets": job.targets,
        "meta": job.meta,
        "state": job.state,
        "cancel_requested": job.cancel_requested,
        "created_by": job.created_by,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "parent_id": job.parent_id,
    }
    if runs is not None:
        runs = list(runs)
        out["summary"] = states.summary(r.state for r in runs)
        out["runs"] = [run_json(r, output=output) for r in runs]
    return out

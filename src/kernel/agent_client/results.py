"""What an agent reports about one execution."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any


@dataclass
class ExecResult:
    """One execution as the agent reports it."""

    id: str
    state: str = "finished"  # running | finished | lost
    exit_code: int | None = None
    signal: int | None = None
    timed_out: bool = False
    cancelled: bool = False
    stdout: str = ""
    stderr: str = ""
    truncated: bool = False
    duration: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    reason: str = ""  # why a run is lost
    error: str = ""  # why a run could not start

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExecResult:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if (k in names and v is not None) or k == "id"})

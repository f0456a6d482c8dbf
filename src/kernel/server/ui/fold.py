"""Folding identical output across hosts, as ClusterShell's clubak does on the command line
(pure): runs whose output and outcome are the same become one group — "97 hosts: ok",
"3 hosts: No space left on device" — so 200 hosts read like one."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass
class Group:
    hosts: list[str] = field(default_factory=list)
    state: str = ""
    exit_code: int | None = None
    stdout: str = ""  # the tail shown (lines bounded)
    stderr: str = ""
    cut: bool = False  # lines were left out


@dataclass(frozen=True)
class RunOutput:
    host: str
    state: str
    exit_code: int | None
    stdout: str
    stderr: str


def tail_lines(text: str, limit: int) -> tuple[str, bool]:
    """The last ``limit`` lines of ``text`` and whether any were left out."""
    lines = text.count("\n") + (0 if not text or text.endswith("\n") else 1)
    if lines <= limit:
        return text, False
    parts = text.split("\n")
    if parts and parts[-1] == "":
        parts.pop()
        return "\n".join(parts[-limit:]) + "\n", True
    return "\n".join(parts[-limit:]), True


def fold(runs: Iterable[RunOutput], max_lines: int = 200) -> list[Group]:
    """Groups of runs with the same state, exit code and output; biggest group first, hosts
    in name order. The whole output decides the group (hashed), only its tail is kept."""
    groups: dict[bytes, Group] = {}
    for r in runs:
        h = hashlib.sha256()
        for part in (r.state, str(r.exit_code), r.stdout, "\0", r.stderr):
            h.update(part.encode("utf-8", "surrogatepass"))
        key = h.digest()
        g = groups.get(key)
        if g is None:
            out, cut_out = tail_lines(r.stdout, max_lines)
            err, cut_err = tail_lines(r.stderr, max_lines)
            g = groups[key] = Group(
                state=r.state, exit_code=r.exit_code, stdout=out, stderr=err,
                cut=cut_out or cut_err,
            )  # fmt: skip
        g.hosts.append(r.host)
    for g in groups.values():
        g.hosts.sort()
    return sorted(groups.values(), key=lambda g: (-len(g.hosts), g.hosts[0]))


def host_list(hosts: list[str], shown: int = 12) -> tuple[list[str], int]:
    """The first ``shown`` names and how many more there are."""
    return hosts[:shown], max(0, len(hosts) - shown)

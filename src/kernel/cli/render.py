"""What a job's output and result look like: lines prefixed by their host, output folded
across hosts (``--group``, ClusterShell's ``clubak -b``), and the summary at the end."""

from __future__ import annotations

from .output import Out

FINAL = frozenset({"ok", "failed", "timed_out", "cancelled", "unreachable", "lost"})
NOT_OK_ORDER = ("failed", "timed_out", "cancelled", "unreachable", "lost")

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class Lines:
    """Splits each (run, stream)'s text into lines; a line is given out once it is complete,
    or when its run ends (the last line of output without a newline)."""

    def __init__(self) -> None:
        self._partial: dict[tuple[str, str], str] = {}

    def feed(self, run: str, stream: str, text: str) -> list[str]:
        key = (run, stream)
        text = self._partial.pop(key, "") + text
        *lines, rest = text.split("\n")
        if rest:
            self._partial[key] = rest
        return lines

    def flush(self, run: str) -> list[tuple[str, str]]:
        """(stream, line) for what is left of ``run``'s output."""
        out = []
        for stream in ("stdout", "stderr"):
            rest = self._partial.pop((run, stream), None)
            if rest:
                out.append((stream, rest))
        return out


class Sink:
    """Where a followed job's output goes; the default prints it live, line by line."""

    def __init__(self, out: Out, *, prefix: bool = True) -> None:
        self.out = out
        self.prefix = prefix
        self.lines = Lines()

    def output(self, run: str, server: str, stream: str, text: str) -> None:
        for line in self.lines.feed(run, stream, text):
            self.emit(server, stream, line)

    def run_ended(self, run: str, server: str) -> None:
        for stream, line in self.lines.flush(run):
            self.emit(server, stream, line)

    def emit(self, server: str, stream: str, line: str) -> None:
        err = stream == "stderr"
        if self.prefix:
            style = self.out.err_style if err else self.out.style
            self.out.line(f"{style.host(server)}: {line}", err=err)
        else:
            self.out.line(line, err=err)

    def finish(self) -> None:
        """Called once the job has ended (before the summary)."""


class Quiet(Sink):
    """Output is not shown (``--json``: the finished job carries it)."""

    def emit(self, server: str, stream: str, line: str) -> None:
        pass


class GroupSink(Sink):
    """``--group``: stdout is gathered per host and printed at the end, hosts with the same
    output under one header; stderr is still printed live, prefixed by its host."""

    def __init__(self, out: Out) -> None:
        super().__init__(out, prefix=True)
        self.gathered: dict[str, list[str]] = {}

    def emit(self, server: str, stream: str, line: str) -> None:
        if stream == "stderr":
            super().emit(server, stream, line)
        else:
            self.gathered.setdefault(server, []).append(line)

    def finish(self) -> None:
        for block in group_blocks(self.gathered, self.out.style):
            self.out.write(block)


def group_blocks(gathered: dict[str, list[str]], style: Any) -> list[str]:
    """One block per distinct output: a header naming its hosts (folded), then the lines."""
    from .nodeset import fold

    by_output: dict[tuple[str, ...], list[str]] = {}
    for server, lines in gathered.items():
        by_output.setdefault(tuple(lines), []).append(server)
    blocks = []
    rule = "-" * 15
    # Most hosts first (the common answer), then by name, as clubak does.
    for output, servers in sorted(by_output.items(), key=lambda kv: (-len(kv[1]), sorted(kv[1]))):
        head = f"{fold(servers)} ({len(servers)})"
        body = "".join(line + "\n" for line in output)
        blocks.append(f"{rule}\n{style.bold(head)}\n{rule}\n{body}")
    return blocks


def run_detail(run: dict[str, Any]) -> str:
    """Why a run did not succeed, in a few words."""
    state = run.get("state")
    if state == "failed":
        if run.get("signal"):
            return f"killed by signal {run['signal']}"
        return f"exit {run.get('exit_code')}"
    if state == "timed_out":
        return "timed out"
    if state in ("unreachable", "lost", "cancelled"):
        err = str(run.get("error") or state)
        return err if len(err) <= 200 else err[:197] + "..."
    return str(state)


def summary(job_id: object, runs: list[dict[str, Any]], elapsed: float, style: Any) -> list[str]:
    """``job 7: 8 ok, 1 failed, 1 unreachable (10 hosts, 0.52 s)`` and a line per reason."""
    counts: dict[str, int] = {}
    for r in runs:
        counts[str(r.get("state"))] = counts.get(str(r.get("state")), 0) + 1
    order = ("ok", *NOT_OK_ORDER, "running", "queued")
    parts = [f"{counts[s]} {style.state(s)}" for s in order if counts.get(s)]
    hosts = "host" if len(runs) == 1 else "hosts"
    counted = ", ".join(parts) or "no runs"
    lines = [f"job {job_id}: {counted} ({len(runs)} {hosts}, {elapsed:.2f} s)"]
    from .nodeset import fold

    for state in NOT_OK_ORDER:
        reasons: dict[str, list[str]] = {}
        for r in runs:
            if r.get("state") == state:
                reasons.setdefault(run_detail(r), []).append(str(r.get("server")))
        for why, servers in sorted(reasons.items(), key=lambda kv: sorted(kv[1])):
            lines.append(f"  {style.state(state)}: {fold(servers)}: {why}")
    return lines

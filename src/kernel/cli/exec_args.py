"""``kernel exec``'s arguments, and a hand-written parser for them that runs without click.

Importing click costs ~20 ms, a third of the 60 ms budget of ``kernel exec -- uptime``
(docs/cli.md, "Start-up"). `parse_fast` reads the usual forms of the exec command line and
answers None for anything else (``--help``, a bad value, an unknown option, a combined short
flag): then click parses it, so help and error messages come from one place. A test checks
that both parsers give the same `ExecArgs` for every command line `parse_fast` accepts.
"""

from __future__ import annotations

from .follow import JobOptions

COLOURS = ("auto", "always", "never")

# option -> (field, takes a value); short and long spellings of one option share a field
OPTIONS = {
    "--profile": ("profile", True),
    "-s": ("server", True),
    "--server": ("server", True),
    "-t": ("tag", True),
    "--tag": ("tag", True),
    "-a": ("all", False),
    "--all": ("all", False),
    "--script": ("script", True),
    "--timeout": ("timeout", True),
    "-p": ("parallel", True),
    "--parallel": ("parallel", True),
    "-e": ("env", True),
    "--env": ("env", True),
    "--cwd": ("cwd", True),
    "--title": ("title", True),
    "-b": ("group", False),
    "--group": ("group", False),
    "--json": ("json", False),
    "-q": ("quiet", False),
    "--quiet": ("quiet", False),
    "-N": ("no_prefix", False),
    "--no-prefix": ("no_prefix", False),
    "--color": ("color", True),
    "--no-wait": ("no_wait", False),
    "--no-cancel": ("no_cancel", False),
}


class ExecArgs:
    __slots__ = (
        "all",
        "command",
        "cwd",
        "env",
        "opts",
        "parallel",
        "profile",
        "script",
        "servers",
        "tags",
        "timeout",
        "title",
    )

    def __init__(
        self,
        *,
        profile: str | None = None,
        servers: list[str] | None = None,
        tags: list[str] | None = None,
        all: bool = False,
        command: list[str] | None = None,
        script: str | None = None,
        timeout: float | None = None,
        parallel: int | None = None,
        env: list[str] | None = None,
        cwd: str | None = None,
        title: str | None = None,
        opts: JobOptions | None = None,
    ) -> None:
        self.profile = profile
        self.servers = servers or []
        self.tags = tags or []
        self.all = all
        self.command = command or []
        self.script = script
        self.timeout = timeout
        self.parallel = parallel
        self.env = env or []
        self.cwd = cwd
        self.title = title
        self.opts = opts or JobOptions()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ExecArgs) and all(
            getattr(self, k) == getattr(other, k) for k in self.__slots__
        )

    def __repr__(self) -> str:
        return "ExecArgs(" + ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__) + ")"


def parse_fast(argv: list[str]) -> ExecArgs | None:
    """``[--profile P] exec [OPTIONS] [--] COMMAND…`` → ExecArgs; None: let click decide."""
    i, profile = 0, None
    if argv[:1] == ["--profile"] and len(argv) > 2:
        profile, i = argv[1], 2
    elif argv[:1] and argv[0].startswith("--profile="):
        profile, i = argv[0].split("=", 1)[1], 1
    if argv[i : i + 1] != ["exec"]:
        return None
    i += 1
    seen: dict[str, list[str]] = {}
    flags: set[str] = set()
    command: list[str] = []
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            command = argv[i + 1 :]
            break
        if not arg.startswith("-") or arg == "-":
            command = argv[i:]
            break
        name, eq, value = arg.partition("=") if arg.startswith("--") else (arg[:2], "", arg[2:])
        if name not in OPTIONS:
            return None
        field, takes_value = OPTIONS[name]
        if takes_value:
            if not (eq or value):
                if i + 1 >= len(argv):
                    return None
                i += 1
                value = argv[i]
            seen.setdefault(field, []).append(value)
        elif eq or value:
            return None  # "--all=x" or "-aq": click explains or handles it
        else:
            flags.add(field)
        i += 1
    if "profile" in seen:
        profile = seen["profile"][-1]
    return _build(profile, seen, flags, command)


def _build(
    profile: str | None, seen: dict[str, list[str]], flags: set[str], command: list[str]
) -> ExecArgs | None:
    def last(field: str) -> str | None:
        values = seen.get(field)
        return values[-1] if values else None

    try:
        timeout = float(t) if (t := last("timeout")) is not None else None
        parallel = int(p) if (p := last("parallel")) is not None else None
    except ValueError:
        return None
    if (timeout is not None and not 0 < timeout < float("inf")) or (
        parallel is not None and parallel < 1
    ):
        return None
    colour = last("color") or "auto"
    if colour not in COLOURS:
        return None
    if any("=" not in e or e.startswith("=") for e in seen.get("env", [])):
        return None
    return ExecArgs(
        profile=profile,
        servers=seen.get("server", []),
        tags=seen.get("tag", []),
        all="all" in flags,
        command=command,
        script=last("script"),
        timeout=timeout,
        parallel=parallel,
        env=seen.get("env", []),
        cwd=last("cwd"),
        title=last("title"),
        opts=JobOptions(
            group="group" in flags,
            json="json" in flags,
            quiet="quiet" in flags,
            prefix="no_prefix" not in flags,
            colour=colour,
            no_wait="no_wait" in flags,
            no_cancel="no_cancel" in flags,
        ),
    )

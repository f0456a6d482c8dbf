"""Init scripts (ARCHITECTURE.md §4): ``init/NN-name.sh`` in the data dir, run once per server
in numeric order when it joins (initflow.py). Scanning the folder, ordering the names, and the
command that runs one script."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from kernel.names import INIT_SCRIPT_RE
from kernel.server.core import shell
from kernel.server.core.files import is_hidden, read_script
from kernel.server.core.shell import RemoteCommand

INIT_TIMEOUT = 1800.0


@dataclass(frozen=True)
class InitScript:
    name: str  # "10-motd.sh"
    order: int  # 10
    text: str
    sha256: str


@dataclass(frozen=True)
class InitScripts:
    scripts: tuple[InitScript, ...] = ()  # in the order they run
    problems: tuple[str, ...] = ()  # files that are not NN-name.sh, unreadable, …


def order_init_names(names: Iterable[str]) -> tuple[list[str], list[str]]:
    """Split file names into (runnable in order, rejected).

    Order is numeric on NN (so 9 runs before 10), ties broken by the whole file name.
    """
    good: list[tuple[int, str]] = []
    bad: list[str] = []
    for n in names:
        m = INIT_SCRIPT_RE.fullmatch(n)
        if m:
            good.append((int(m.group(1)), n))
        else:
            bad.append(n)
    good.sort()
    return [n for _, n in good], sorted(bad)


def scan_init(init_dir: str | os.PathLike[str]) -> InitScripts:
    root = Path(init_dir)
    if not root.is_dir():
        # No init/ folder simply means no init scripts.
        return InitScripts()
    try:
        names = [n for n in os.listdir(root) if not is_hidden(n)]
    except OSError as e:
        return InitScripts(problems=(f"cannot read {root}: {e.strerror}",))
    ordered, rejected = order_init_names(names)
    problems = [
        f"{n!r} is not run: init scripts are named NN-name.sh (name as for services)"
        for n in rejected
    ]
    scripts: list[InitScript] = []
    for n in ordered:
        s = read_script(root, n, problems, "init folder")
        if s is not None:
            m = INIT_SCRIPT_RE.fullmatch(n)
            assert m is not None  # ordered names all matched
            scripts.append(InitScript(name=n, order=int(m.group(1)), text=s.text, sha256=s.sha256))
    return InitScripts(scripts=tuple(scripts), problems=tuple(problems))


def init_command(script: InitScript, *, kernel_url: str) -> RemoteCommand:
    """Run one init script (`bash -s`, script on stdin) with KERNEL_URL and its own name."""
    shell.validate_name("init script", script.name)
    return RemoteCommand(
        cmd=shell.run_stdin_script(),
        stdin=script.text,
        env={"KERNEL_URL": kernel_url, "KERNEL_INIT_SCRIPT": script.name},
        timeout=INIT_TIMEOUT,
        title=f"init {script.name}",
    )

"""The original Kernel's ``static/service/*`` and ``static/init/*``, brought into the data dir
(``kernel-server import-legacy``; docs/migrating.md).

The layout is the same as Kernel's, so folders are copied as they are — never over a
different one already there — and judged by the catalogue (`catalog.scan_service`,
`initscripts.scan_init`). Scripts that download from the original server's hard-coded URL
are pointed out with the line that replaces it (``$KERNEL_SERVICE_URL`` for a service's own
files); they are not rewritten: the admin reads and changes their own scripts.
"""

from __future__ import annotations

import filecmp
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from kernel.names import INIT_SCRIPT_RE, is_valid_name
from kernel.server.core.datadir import EXAMPLES_DIR
from kernel.server.core.files import is_hidden
from kernel.server.core.text import printable as shown
from kernel.server.inventory.initscripts import scan_init
from kernel.server.services.catalog import SCRIPTS, scan_service

_URL = re.compile(r"""https?://[^\s'"<>|;&()`\\]+""")


@dataclass(frozen=True)
class Hint:
    """A line that downloads from the original server, and what to write instead."""

    script: str  # "deploy.sh", "01-init.sh"
    line_no: int
    line: str  # as shown (escaped, cut)
    replacement: str = ""  # the whole line, changed; "" when there is no exact one
    note: str = ""


@dataclass
class Item:
    """One service folder or init script of the original, and what the import does."""

    kind: str  # "service" or "init"
    name: str  # as shown
    action: str  # "copy", "same" (there already, identical), "conflict", "skip"
    reason: str = ""
    problems: tuple[str, ...] = ()  # what the catalogue says (empty: accepted)
    unit: str = ""
    hints: list[Hint] = field(default_factory=list)
    source: Path | None = None
    data: bytes = b""  # an init script's text, as accepted by the scan


@dataclass
class Folders:
    services: list[Item] = field(default_factory=list)
    init: list[Item] = field(default_factory=list)  # accepted ones in the order they run
    others_in_init: list[str] = field(default_factory=list)  # data dir scripts not imported
    problems: list[str] = field(default_factory=list)  # about the folders themselves


def plan(checkout: Path, data_dir: Path, download_url: str | None) -> Folders:
    out = Folders()
    _plan_services(checkout / "static" / "service", data_dir / "service", download_url, out)
    _plan_init(checkout / "static" / "init", data_dir / "init", download_url, out)
    return out


def _listing(folder: Path, out: Folders) -> list[str]:
    if not folder.exists():
        return []
    try:
        return sorted(n for n in os.listdir(folder) if not is_hidden(n))
    except OSError as e:
        out.problems.append(f"cannot read {shown(str(folder))}: {e.strerror}")
        return []


def _plan_services(src: Path, dst: Path, download_url: str | None, out: Folders) -> None:
    for name in _listing(src, out):
        folder = src / name
        item = Item("service", shown(name), "", source=folder)
        out.services.append(item)
        if not is_valid_name(name):
            item.action = "skip"
            item.reason = "its name is not allowed in Kernel: rename the folder and run again"
            continue
        if not folder.is_dir():
            item.action, item.reason = "skip", "not a folder"
            continue
        svc = scan_service(folder)
        item.problems, item.unit = svc.problems, svc.unit
        artifacts = {a.path for a in svc.artifacts}
        for script in SCRIPTS:
            text = svc.scripts[script].text if script in svc.scripts else ""
            item.hints += hints(script, text, service=name, artifacts=artifacts, old=download_url)
        there = dst / name
        if not there.exists() and not there.is_symlink():
            item.action = "copy"
        elif there.is_dir() and same_tree(folder, there):
            item.action = "same"
        else:
            item.action = "conflict"
            item.reason = f"{shown(str(there))} exists and differs from the original's; left alone"
            if (EXAMPLES_DIR / "service" / name).is_dir() and same_tree(
                EXAMPLES_DIR / "service" / name, there
            ):
                item.reason += " (it is Kernel's example: remove it to import yours)"
            else:
                item.reason += " (move it away and run again to import the original's)"


def _plan_init(src: Path, dst: Path, download_url: str | None, out: Folders) -> None:
    if not src.is_dir():
        return
    scan = scan_init(src)
    for script in scan.scripts:
        data = script.text.encode("utf-8")
        item = Item("init", script.name, "", source=src / script.name, data=data)
        item.hints = hints(script.name, script.text, service=None, artifacts=set(),
                           old=download_url)  # fmt: skip
        there = dst / script.name
        if not there.exists() and not there.is_symlink():
            item.action = "copy"
        elif there.is_file() and not there.is_symlink() and _read(there) == data:
            item.action = "same"
        else:
            item.action = "conflict"
            item.reason = f"{shown(str(there))} exists and differs from the original's; left alone"
        out.init.append(item)
    for problem in scan.problems:
        out.init.append(Item("init", "", "skip", reason=problem))
    ours = {s.name for s in scan.scripts}
    out.others_in_init = sorted(
        n for n in _listing(dst, out) if INIT_SCRIPT_RE.fullmatch(n) and n not in ours
    )


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def apply(folders: Folders, data_dir: Path) -> int:
    """Copy what the plan says to copy; returns how many were copied. A folder is copied
    under a hidden name and renamed, so a scan never sees half of one."""
    copied = 0
    for item in folders.services:
        if item.action != "copy" or item.source is None:
            continue
        dst = data_dir / "service" / item.source.name
        tmp = dst.with_name(f".import-{dst.name}")
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            shutil.copytree(item.source, tmp, symlinks=True, ignore=shutil.ignore_patterns(".*"))
            os.rename(tmp, dst)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        copied += 1
    for item in folders.init:
        if item.action != "copy" or item.source is None:
            continue
        dst = data_dir / "init" / item.source.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".import-{dst.name}")
        tmp.write_bytes(item.data)
        os.rename(tmp, dst)
        copied += 1
    return copied


def same_tree(a: Path, b: Path) -> bool:
    """Do two folders hold the same files (hidden ones aside), links and bytes alike?"""
    try:
        return _entries(a) == _entries(b) and all(
            filecmp.cmp(a / rel, b / rel, shallow=False)
            for rel, kind in _entries(a).items()
            if kind == "file"
        )
    except OSError:
        return False


def _entries(root: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not is_hidden(d))
        here = Path(dirpath)
        for n in dirnames + filenames:
            if is_hidden(n):
                continue
            p = here / n
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                found[rel] = "link:" + os.readlink(p)
            else:
                found[rel] = "dir" if p.is_dir() else "file"
    return found


# -- hard-coded download URLs --------------------------------------------------------------------
def hints(
    script: str, text: str, *, service: str | None, artifacts: set[str], old: str | None
) -> list[Hint]:
    """Lines of ``script`` that download from the original server's ``/static/…`` paths (or
    its host), each with its replacement. ``service``: the service it belongs to (None for an
    init script, which gets no ``$KERNEL_SERVICE_URL``)."""
    old_origin = _origin(old) if old else None
    found: list[Hint] = []
    for no, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("#"):
            continue
        new, notes, matched = line, [], False
        for m in reversed(list(_URL.finditer(line))):
            parts = urlsplit(m.group(0))
            path = parts.path
            if path.startswith("/static/"):
                sub = path[len("/static/") :]
                own = f"service/{service}"
                if service is not None and (sub == own or sub.startswith(own + "/")):
                    rest = sub[len(own) + 1 :]  # "" for the folder itself (a base in a variable)
                    repl = f"$KERNEL_SERVICE_URL/{rest}" if rest else "$KERNEL_SERVICE_URL"
                    if rest and rest not in artifacts:
                        notes.append(f"{rest} is not in the service folder: add it there")
                elif sub.startswith(("service/", "init/")):
                    repl = f"$KERNEL_URL/static/{sub}"
                    notes.append(
                        "served only with the setting PUBLIC_ARTIFACTS = true (no signature); "
                        "better: a copy in this service's folder"
                        if service is not None
                        else "served only with the setting PUBLIC_ARTIFACTS = true (no signature)"
                    )
                else:
                    repl = f"$KERNEL_URL/static/{sub}"
                    notes.append("Kernel serves its own files there, not the original's")
                new = _replace(new, m.start(), m.end(), repl)
                matched = True
            elif old_origin and _origin(m.group(0)) == old_origin:
                notes.append(
                    f"downloads from the original server ({old_origin}): put the file in the "
                    'service folder and fetch it from "$KERNEL_SERVICE_URL/<file>"'
                )
                matched = True
        if matched:
            found.append(
                Hint(
                    script=script,
                    line_no=no,
                    line=shown(line.strip()),
                    replacement=shown(new.strip()) if new != line else "",
                    note="; ".join(reversed(notes)),
                )
            )
    return found


def _origin(url: str) -> str | None:
    try:
        p = urlsplit(url)
        port = p.port or {"http": 80, "https": 443}.get(p.scheme)
        return f"{p.scheme}://{(p.hostname or '').lower()}:{port}"
    except ValueError:
        return None


def _replace(line: str, start: int, end: int, value: str) -> str:
    """Put ``"value"`` where the URL was, in place of the URL's own quotes if it had any."""
    if start > 0 and end < len(line) and line[start - 1] == line[end] and line[end] in "'\"":
        start, end = start - 1, end + 1
    return f'{line[:start]}"{value}"{line[end:]}'

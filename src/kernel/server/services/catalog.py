"""The services catalogue (`service/<name>/`) and the init scripts (`init/NN-name.sh`).

Scanning only reads files and never raises for what it finds: every folder becomes a
`Service`, and a broken one carries `problems` (exact, human-readable messages) that make it
not deployable. Nothing found on disk is ever interpolated into a shell line; names that fail
`shell.validate_name` are shown (as repr) and refused.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from kernel.exceptions import InvalidName
from kernel.jsontext import lone_surrogate_at
from kernel.names import is_valid_name
from kernel.server.core.files import Script, inside, is_hidden, read_script, regular_file
from kernel.server.core.shell import unit_name, validate_name

SCRIPTS = ("deploy.sh", "remove.sh")
INFO = "info.json"

MAX_INFO_BYTES = 64 * 1024
MAX_ARTIFACT_BYTES = 1024 * 1024 * 1024  # 1 GiB: an upper bound, not a recommendation
MAX_FILES = 1000  # per service folder, to keep a scan cheap


@dataclass(frozen=True)
class Artifact:
    path: str  # relative to the service folder, "/"-separated
    size: int


@dataclass(frozen=True)
class Service:
    name: str  # the folder name (shown as-is even when not allowed)
    path: Path
    description: str = ""
    display_name: str = ""
    unit: str = ""  # full unit name, e.g. "sums.service"; "" when unknown
    scripts: dict[str, Script] = field(default_factory=dict)
    artifacts: tuple[Artifact, ...] = ()
    problems: tuple[str, ...] = ()

    @property
    def deployable(self) -> bool:
        return not self.problems

    @property
    def title(self) -> str:
        return self.display_name or self.name

    def script(self, name: str) -> Script:
        """The script `deploy.sh` or `remove.sh`; KeyError if missing (see `problems`)."""
        return self.scripts[name]


@dataclass(frozen=True)
class Catalogue:
    services: tuple[Service, ...] = ()
    problems: tuple[str, ...] = ()  # about the service/ folder itself

    def __iter__(self) -> Iterator[Service]:
        return iter(self.services)

    def __len__(self) -> int:
        return len(self.services)

    def get(self, name: str) -> Service | None:
        for s in self.services:
            if s.name == name:
                return s
        return None

    @property
    def deployable(self) -> tuple[Service, ...]:
        return tuple(s for s in self.services if s.deployable)

    @property
    def units(self) -> list[str]:
        """Every known unit, for the status probe (sorted, no duplicates); a service with
        problems but a valid unit is still watched (it may be installed already)."""
        return sorted({s.unit for s in self.services if s.unit})


def scan(service_dir: str | os.PathLike[str]) -> Catalogue:
    """Scan `service_dir` (the data dir's `service/`) into a Catalogue, sorted by name."""
    root = Path(service_dir)
    if not root.exists():
        return Catalogue(problems=(f"{root} does not exist",))
    if not root.is_dir():
        return Catalogue(problems=(f"{root} is not a folder",))
    try:
        entries = sorted(os.listdir(root))
    except OSError as e:
        return Catalogue(problems=(f"cannot read {root}: {e.strerror}",))
    services = [scan_service(root / name) for name in entries if not is_hidden(name)]
    return Catalogue(services=tuple(services))


def scan_service(folder: Path) -> Service:
    """One service folder; problems are collected, never raised."""
    name = folder.name
    problems: list[str] = []
    try:
        validate_name("service", name)
    except InvalidName as e:
        return Service(name=name, path=folder, problems=(str(e),))
    if not folder.is_dir():
        return Service(name=name, path=folder, problems=(f"{name} is not a folder",))

    info = _read_info(folder, problems)
    description = ""
    display_name = ""
    unit = ""
    if info is not None:
        description, display_name, unit = _check_info(name, info, problems)

    scripts: dict[str, Script] = {}
    for script in SCRIPTS:
        s = read_script(folder, script, problems)
        if s is not None:
            scripts[script] = s

    artifacts = _scan_artifacts(folder, problems)
    return Service(
        name=name,
        path=folder,
        description=description,
        display_name=display_name,
        unit=unit,
        scripts=scripts,
        artifacts=tuple(artifacts),
        problems=tuple(problems),
    )


def _read_info(folder: Path, problems: list[str]) -> dict[str, object] | None:
    data = regular_file(folder, INFO, problems, MAX_INFO_BYTES)
    if data is None:
        return None
    try:
        info = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError:
        problems.append(f"{INFO} is not valid UTF-8")
        return None
    except json.JSONDecodeError as e:
        problems.append(f"{INFO} is not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})")
        return None
    except RecursionError:
        problems.append(f"{INFO} is JSON nested too deeply")
        return None
    where = lone_surrogate_at(info)
    if where is not None:
        problems.append(f"{INFO}: {where[2:] or 'the value'} is not valid Unicode text")
        return None
    if not isinstance(info, dict):
        problems.append(f"{INFO} must hold a JSON object, not {_json_type(info)}")
        return None
    return info


def _json_type(value: object) -> str:
    return {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "true/false",
        int: "a number",
        float: "a number",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def _check_info(name: str, info: dict[str, object], problems: list[str]) -> tuple[str, str, str]:
    description = info.get("description")
    if "description" not in info:
        problems.append(f'{INFO}: "description" is required')
        description = ""
    elif not isinstance(description, str) or not description.strip():
        problems.append(f'{INFO}: "description" must be a non-empty string')
        description = ""

    display_name = info.get("display_name", "")
    if not isinstance(display_name, str):
        problems.append(f'{INFO}: "display_name" must be a string, not {_json_type(display_name)}')
        display_name = ""

    raw_unit = info.get("unit", name)
    unit = ""
    if not isinstance(raw_unit, str):
        problems.append(f'{INFO}: "unit" must be a string, not {_json_type(raw_unit)}')
    else:
        try:
            unit = unit_name(raw_unit)
        except InvalidName as e:
            problems.append(f"{INFO}: {e}")
    return str(description), display_name.strip(), unit


def _scan_artifacts(folder: Path, problems: list[str]) -> list[Artifact]:
    """Every other file in the folder (recursively); odd names and outside links are problems."""
    artifacts: list[Artifact] = []
    seen = 0
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        here = Path(dirpath)
        rel_dir = here.relative_to(folder)
        dirnames.sort()
        for d in list(dirnames):
            rel = (rel_dir / d).as_posix()
            if is_hidden(d):
                dirnames.remove(d)
            elif not is_valid_name(d):
                problems.append(f"folder {rel!r} has a name that is not allowed")
                dirnames.remove(d)
            elif (here / d).is_symlink():
                dirnames.remove(d)
                if not inside(folder, here / d):
                    problems.append(f"{rel} is a symlink pointing outside the service folder")
                # a folder linked from inside the service is listed once, by its real path
        for fname in sorted(filenames):
            rel = (rel_dir / fname).as_posix()
            if is_hidden(fname) or (rel_dir == Path(".") and fname in (INFO, *SCRIPTS)):
                continue
            seen += 1
            if seen > MAX_FILES:
                problems.append(f"more than {MAX_FILES} files in the service folder")
                return artifacts
            if not is_valid_name(fname):
                problems.append(f"file {rel!r} has a name that is not allowed")
                continue
            path = here / fname
            if path.is_symlink() and not inside(folder, path):
                problems.append(f"{rel} is a symlink pointing outside the service folder")
                continue
            try:
                st = os.stat(path)
            except OSError:
                problems.append(f"{rel} is a broken symlink")
                continue
            if not stat.S_ISREG(st.st_mode):
                problems.append(f"{rel} is not a regular file")
                continue
            if st.st_size > MAX_ARTIFACT_BYTES:
                problems.append(
                    f"{rel} is too large ({st.st_size} bytes, at most {MAX_ARTIFACT_BYTES})"
                )
                continue
            artifacts.append(Artifact(path=rel, size=st.st_size))
    return artifacts

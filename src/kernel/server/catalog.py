"""The services catalogue (`service/<name>/`) and the init scripts (`init/NN-name.sh`).

Scanning only reads files and never raises for what it finds: every folder becomes a
`Service`, and a broken one carries `problems` (exact, human-readable messages) that make it
not deployable. Nothing found on disk is ever interpolated into a shell line; names that fail
`shell.validate_name` are shown (as repr) and refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from kernel.jsontext import lone_surrogate_at
from kernel.server.shell import InvalidName, is_valid_name, unit_name, validate_name

SCRIPTS = ("deploy.sh", "remove.sh")
INFO = "info.json"

MAX_SCRIPT_BYTES = 1024 * 1024  # scripts travel in the agent's JSON body (16 MiB cap)
MAX_INFO_BYTES = 64 * 1024
MAX_ARTIFACT_BYTES = 1024 * 1024 * 1024  # 1 GiB: an upper bound, not a recommendation
MAX_FILES = 1000  # per service folder, to keep a scan cheap

INIT_RE = re.compile(r"^(\d{1,6})-([A-Za-z0-9][A-Za-z0-9_.@-]{0,63})\.sh$")


@dataclass(frozen=True)
class Script:
    name: str  # "deploy.sh"
    text: str
    sha256: str


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


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _is_hidden(name: str) -> bool:
    # Editors, VCS and OS metadata: .git, .DS_Store, .swp … never part of a service.
    return name.startswith(".")


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
    services = [scan_service(root / name) for name in entries if not _is_hidden(name)]
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
        s = _read_script(folder, script, problems)
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


def _regular_file(
    folder: Path, rel: str, problems: list[str], limit: int, where: str = "service folder"
) -> bytes | None:
    """Read folder/rel if it is a regular file inside the folder and at most `limit` bytes."""
    path = folder / rel
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        problems.append(f"{rel} is missing")
        return None
    except OSError as e:
        problems.append(f"cannot read {rel}: {e.strerror}")
        return None
    if stat.S_ISLNK(st.st_mode):
        if not _inside(folder, path):
            problems.append(f"{rel} is a symlink pointing outside the {where}")
            return None
        try:
            st = os.stat(path)
        except OSError:
            problems.append(f"{rel} is a broken symlink")
            return None
    if not stat.S_ISREG(st.st_mode):
        problems.append(f"{rel} is not a regular file")
        return None
    if st.st_size > limit:
        problems.append(f"{rel} is too large ({st.st_size} bytes, at most {limit})")
        return None
    try:
        with open(path, "rb") as f:
            return f.read(limit + 1)[:limit]
    except OSError as e:
        problems.append(f"cannot read {rel}: {e.strerror}")
        return None


def _inside(folder: Path, path: Path) -> bool:
    """Does `path`, with every symlink resolved, stay inside `folder` (also resolved)?"""
    base = os.path.realpath(folder)
    target = os.path.realpath(path)
    return target == base or target.startswith(base + os.sep)


def _read_info(folder: Path, problems: list[str]) -> dict[str, object] | None:
    data = _regular_file(folder, INFO, problems, MAX_INFO_BYTES)
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


def _read_script(
    folder: Path, script: str, problems: list[str], where: str = "service folder"
) -> Script | None:
    data = _regular_file(folder, script, problems, MAX_SCRIPT_BYTES, where)
    if data is None:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        problems.append(f"{script} is not valid UTF-8")
        return None
    if "\x00" in text:
        problems.append(f"{script} contains a NUL byte")
        return None
    return Script(name=script, text=text, sha256=sha256_hex(data))


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
            if _is_hidden(d):
                dirnames.remove(d)
            elif not is_valid_name(d):
                problems.append(f"folder {rel!r} has a name that is not allowed")
                dirnames.remove(d)
            elif (here / d).is_symlink():
                dirnames.remove(d)
                if not _inside(folder, here / d):
                    problems.append(f"{rel} is a symlink pointing outside the service folder")
                # a folder linked from inside the service is listed once, by its real path
        for fname in sorted(filenames):
            rel = (rel_dir / fname).as_posix()
            if _is_hidden(fname) or (rel_dir == Path(".") and fname in (INFO, *SCRIPTS)):
                continue
            seen += 1
            if seen > MAX_FILES:
                problems.append(f"more than {MAX_FILES} files in the service folder")
                return artifacts
            if not is_valid_name(fname):
                problems.append(f"file {rel!r} has a name that is not allowed")
                continue
            path = here / fname
            if path.is_symlink() and not _inside(folder, path):
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


# --- init scripts ------------------------------------------------------------------------


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
        m = INIT_RE.fullmatch(n)
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
        names = [n for n in os.listdir(root) if not _is_hidden(n)]
    except OSError as e:
        return InitScripts(problems=(f"cannot read {root}: {e.strerror}",))
    ordered, rejected = order_init_names(names)
    problems = [
        f"{n!r} is not run: init scripts are named NN-name.sh (name as for services)"
        for n in rejected
    ]
    scripts: list[InitScript] = []
    for n in ordered:
        s = _read_script(root, n, problems, "init folder")
        if s is not None:
            m = INIT_RE.fullmatch(n)
            assert m is not None  # ordered names all matched
            scripts.append(InitScript(name=n, order=int(m.group(1)), text=s.text, sha256=s.sha256))
    return InitScripts(scripts=tuple(scripts), problems=tuple(problems))


# --- examples for a new data dir -----------------------------------------------------------

EXAMPLES_DIR = Path(__file__).resolve().parents[3] / "examples"  # in a source checkout


def install_examples(
    data_dir: str | os.PathLike[str],
    examples: str | os.PathLike[str] = EXAMPLES_DIR,
    *,
    test_only: bool = False,
) -> list[str]:
    """Copy the example services and init scripts into a data dir that has none yet.

    `service/` and `init/` are each filled only when they do not exist, so an admin's own
    folders are never touched. Services marked `"test_only": true` in info.json are skipped
    unless `test_only`. Returns what was copied ("service/sums", "init/10-motd.sh", …).
    """
    src = Path(examples)
    dst = Path(data_dir)
    copied: list[str] = []
    if (src / "service").is_dir() and not (dst / "service").exists():
        (dst / "service").mkdir(parents=True)
        for folder in sorted((src / "service").iterdir()):
            if not folder.is_dir() or _is_hidden(folder.name):
                continue
            if not test_only and _marked_test_only(folder):
                continue
            shutil.copytree(folder, dst / "service" / folder.name, symlinks=True)
            copied.append(f"service/{folder.name}")
    if (src / "init").is_dir() and not (dst / "init").exists():
        (dst / "init").mkdir(parents=True)
        for script in sorted((src / "init").iterdir()):
            if script.is_file() and not _is_hidden(script.name):
                shutil.copy2(script, dst / "init" / script.name)
                copied.append(f"init/{script.name}")
    return copied


def _marked_test_only(folder: Path) -> bool:
    try:
        info = json.loads((folder / INFO).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and info.get("test_only") is True

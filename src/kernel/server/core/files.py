"""Reading the data dir's folders safely: a file is read only if it is a regular file inside
its folder (a symlink may not lead out), within a size cap; a script must also be UTF-8 text
without NUL. Problems are collected as sentences, never raised: a broken folder is listed
with what is wrong with it."""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

MAX_SCRIPT_BYTES = 1024 * 1024  # scripts travel in the agent's JSON body (16 MiB cap)


@dataclass(frozen=True)
class Script:
    name: str  # "deploy.sh"
    text: str
    sha256: str


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_hidden(name: str) -> bool:
    # Editors, VCS and OS metadata: .git, .DS_Store, .swp … never part of a service.
    return name.startswith(".")


def regular_file(
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
        if not inside(folder, path):
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


def inside(folder: Path, path: Path) -> bool:
    """Does `path`, with every symlink resolved, stay inside `folder` (also resolved)?"""
    base = os.path.realpath(folder)
    target = os.path.realpath(path)
    return target == base or target.startswith(base + os.sep)


def read_script(
    folder: Path, script: str, problems: list[str], where: str = "service folder"
) -> Script | None:
    data = regular_file(folder, script, problems, MAX_SCRIPT_BYTES, where)
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

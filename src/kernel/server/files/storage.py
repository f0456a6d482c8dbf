"""Uploaded files in the data dir (``<data dir>/files/<id>``): received in chunks straight to
disk with their SHA-256 computed on the way (never the whole file in memory), capped, and
kept for FILES_KEEP seconds for pushes to servers.

An upload is written to a hidden ``.<id>.part`` file, flushed to disk and renamed to its id
only when it is complete, so a file under an id is always whole. Expired uploads (and parts
left by a crash) are deleted by `prune`, which every upload runs first.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import hashlib
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from sqlalchemy import select
from sqlalchemy.orm import Session

from kernel.exceptions import InvalidInput, StorageFull, TooLarge
from kernel.server.models.files import Upload

UPLOAD_PATH = "/api/v1/files"  # the one route that takes large bodies (wsgi_server.py)
CHUNK = 1024 * 1024
PART_MAX_AGE = 86400.0  # seconds before a part left by a crash is removed
ID_CHARS = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class Received:
    id: str
    size: int
    sha256: str


def files_dir(data_dir: Path | str) -> Path:
    return Path(data_dir) / "files"


def is_upload_id(value: str) -> bool:
    return len(value) == 32 and set(value) <= ID_CHARS


def path_of(data_dir: Path | str, upload_id: str) -> Path | None:
    """The file of an upload, if the id is one and the file is there."""
    if not is_upload_id(upload_id):
        return None
    path = files_dir(data_dir) / upload_id
    return path if path.is_file() else None


def size_text(n: int) -> str:
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.4g} {unit}"
    return f"{n} bytes"


def too_large(size: int | None, cap: int, what: str = "the upload") -> TooLarge:
    said = f" is {size} bytes" if size is not None else ""
    return TooLarge(
        f"{what}{said}: more than the cap of {size_text(cap)} ({cap} bytes, FILES_MAX_UPLOAD)"
    )


def receive(stream: IO[bytes], data_dir: Path | str, *, cap: int, length: int | None) -> Received:
    """Copy ``stream`` (``length`` bytes if known) into a new upload; TooLarge past ``cap``
    bytes, StorageFull when the disk is, InvalidInput when the body ends early."""
    if length is not None and length > cap:
        raise too_large(length, cap)
    folder = files_dir(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    upload_id = uuid.uuid4().hex
    part = folder / f".{upload_id}.part"
    digest = hashlib.sha256()
    size = 0
    done = False
    try:
        with open(part, "xb") as out:
            while True:
                chunk = stream.read(CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                if size > cap:
                    raise too_large(None, cap)
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if length is not None and size != length:
            raise InvalidInput(f"the upload ended after {size} of {length} bytes")
        os.rename(part, folder / upload_id)
        done = True
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StorageFull("the server's disk is full: the upload was not saved") from None
        raise
    finally:
        if not done:
            with contextlib.suppress(OSError):
                part.unlink()
    return Received(upload_id, size, digest.hexdigest())


def discard(data_dir: Path | str, upload_id: str) -> None:
    if is_upload_id(upload_id):
        with contextlib.suppress(FileNotFoundError):
            (files_dir(data_dir) / upload_id).unlink()


def prune(s: Session, data_dir: Path | str, now: dt.datetime) -> int:
    """Delete expired uploads (rows and files) and old parts; how many uploads went. The
    caller commits."""
    gone = list(s.scalars(select(Upload).where(Upload.expires_at <= now)))
    for up in gone:
        discard(data_dir, up.id)
        s.delete(up)
    folder = files_dir(data_dir)
    if folder.is_dir():
        cut = time.time() - PART_MAX_AGE
        for entry in folder.iterdir():
            if entry.name.endswith(".part"):
                with contextlib.suppress(OSError):
                    if entry.stat().st_mtime < cut:
                        entry.unlink()
    return len(gone)

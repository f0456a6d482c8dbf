"""Small real disks for tests: a tmpfs mounted for the test and unmounted by path at the end,
whatever happened, and a way to fill one up."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def tmpfs(mnt: Path, size: str, mode: str = "0755") -> Iterator[Path]:
    """A tmpfs of ``size`` (``"4m"``) on ``mnt`` (made if missing)."""
    mnt.mkdir(parents=True, exist_ok=True)
    cmd = ["mount", "-t", "tmpfs", "-o", f"size={size},mode={mode}", "tmpfs", str(mnt)]
    subprocess.run(cmd, check=True)
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], check=True)  # busy: detach it anyway


def fill(disk: Path, name: str = "filler") -> Path:
    """Write a file on ``disk`` until it is full; remove the file to free the space."""
    path = disk / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
    try:  # the last block that fits
        while True:
            os.write(fd, b"\0" * 512)
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
    finally:
        os.close(fd)
    return path

"""SQLite is for one server: a second kernel-server on the same SQLite database is refused
with a clear line (several replicas need PostgreSQL, docs/replicas.md). The first holds a lock
on a file beside the database for as long as it serves."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from kernel.exceptions import ConfigError
from kernel.server.core.db import Database


def hold_sqlite(db: Database) -> IO[str] | None:
    """The lock file, held (keep it open); None for PostgreSQL, which takes replicas."""
    if db.engine.dialect.name != "sqlite" or not db.engine.url.database:
        return None
    path = Path(db.engine.url.database + ".server-lock")
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "?"
        handle.close()
        raise ConfigError(
            f"another kernel-server (pid {holder}) already serves the SQLite database "
            f"{db.engine.url.database}: SQLite is for one server; several replicas need "
            "PostgreSQL (KERNEL_DATABASE_URL, docs/replicas.md)"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle

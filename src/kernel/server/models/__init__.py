"""The tables, one module per area (column meanings: docs/server.md; a change needs a migration).

Importing this package imports every table, so ``Base.metadata`` is complete (the migrations'
check and ``create_all`` rely on it)."""

from kernel.server.models import (
    alerts,
    audit,
    cluster,
    files,
    installation,
    jobs,
    schedules,
    servers,
    status,
    users,
)

__all__ = [
    "alerts", "audit", "cluster", "files", "installation", "jobs", "schedules", "servers",
    "status", "users",
]  # fmt: skip

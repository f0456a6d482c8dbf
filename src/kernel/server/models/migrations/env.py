"""Alembic environment: migrations run on the connection the app hands over (see migrate.py)."""

from alembic import context

import kernel.server.models  # noqa: F401 - every table, so the metadata is complete
from kernel.server.core.db import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()

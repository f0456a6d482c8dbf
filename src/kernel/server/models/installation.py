"""This installation's identity: an id kept in the database and in the data dir. A data dir
that has been used before never silently starts a new installation on an empty or replaced
database (a fresh admin password, every token dead); the server refuses with one line that
says what happened and what to do."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

from sqlalchemy import String, func, select
from sqlalchemy.orm import Mapped, mapped_column

from kernel.exceptions import ConfigError
from kernel.server.core.db import Base, Database, UTCDateTime, utcnow
from kernel.server.models.users import User

ID_FILE = "installation"


class Installation(Base):
    __tablename__ = "installation"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


def check(db: Database, data_dir: Path, *, used_before: bool) -> str:
    """The installation id, after making sure database and data dir belong together.

    ``used_before``: the data dir held Kernel's files before this start (its secret key or
    its installation id), so an empty database there is a lost one, not a new one."""
    path = data_dir / ID_FILE
    on_disk = path.read_text().strip() if path.exists() else None
    with db.session() as s:
        in_db = s.scalars(select(Installation.id)).first()
        users = s.scalar(select(func.count()).select_from(User)) or 0
        if in_db is None:
            if not users and (on_disk is not None or used_before):
                raise ConfigError(
                    f"the database ({db.url_shown}) is empty, but the data dir {data_dir} has "
                    "been used before: it looks lost or replaced. Restore it from a backup; "
                    f"to start a new installation on purpose, remove {path}"
                    + (" and secret_key" if used_before else "")
                )
            # New, or a database from before installation ids (it has users): adopt it.
            in_db = on_disk or str(uuid.uuid4())
            s.add(Installation(id=in_db))
        elif on_disk is not None and on_disk != in_db:
            raise ConfigError(
                f"the database ({db.url_shown}) belongs to installation {in_db}, but the data "
                f"dir {data_dir} to {on_disk}: they do not go together"
            )
    if on_disk is None:  # a new installation, or a new data dir for this database (a replica)
        path.write_text(in_db + "\n")
    return in_db

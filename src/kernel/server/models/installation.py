"""This installation's identity: an id kept in the database and in the data dir. A data dir
that has been used before never silently starts a new installation on an empty or replaced
database (a fresh admin password, every token dead); the server refuses with one line that
says what happened and what to do."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import uuid
from pathlib import Path

from sqlalchemy import String, Text, func, select
from sqlalchemy.orm import Mapped, mapped_column

from kernel.exceptions import ConfigError
from kernel.server.core.db import Base, Database, UTCDateTime, utcnow
from kernel.server.core.sealing import PREFIX, Keyring
from kernel.server.models.cluster import Replica
from kernel.server.models.users import User

ID_FILE = "installation"


class Installation(Base):
    __tablename__ = "installation"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    # What tells a server whose keys are not the installation's (a replica set up with its
    # own): the id sealed with the sealing key, and a MAC of a constant with SECRET_KEY.
    seal_check: Mapped[str | None] = mapped_column(Text)
    secret_check: Mapped[str | None] = mapped_column(String(64))


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


def secret_check(secret_key: str) -> str:
    """A value that tells whether two servers sign sessions with the same key (and nothing
    about the key)."""
    return hmac.new(secret_key.encode(), b"kernel: same SECRET_KEY?", hashlib.sha256).hexdigest()


def check_keys(
    db: Database, keyring: Keyring, secret_key: str, *, key_file: Path, stale: float
) -> None:
    """Make sure this server holds the installation's keys, which every replica must share:
    the sealing key (else it cannot open the agent keys) and SECRET_KEY (else a browser
    logged in through one replica is a stranger to the next). A different SECRET_KEY is taken
    as the new one when no other replica is running (rotation); refused when one is."""
    mine = secret_check(secret_key)
    with db.session() as s:
        row = s.scalars(select(Installation)).first()
        if row is None:
            return
        if row.seal_check:
            try:
                if keyring.open(row.seal_check) != row.id:
                    raise ConfigError("the sealing check does not match this installation")
            except ConfigError as e:
                raise ConfigError(
                    f"this server's sealing key ({key_file}) is not the one this database's "
                    f"secrets were sealed with ({e}); every replica needs the same key file: "
                    "copy it from a server of this installation (SEALING_KEY_FILE)"
                ) from None
        # (SQLite: one server by construction — serve() refuses a second — so a new key
        # is always a rotation.)
        multi = db.engine.dialect.name != "sqlite"
        if multi and row.secret_check and row.secret_check != mine:
            cut = utcnow() - dt.timedelta(seconds=stale)
            others = s.scalars(select(Replica.host).where(Replica.seen_at > cut)).all()
            if others:
                raise ConfigError(
                    "this server's SECRET_KEY is not the one of the replicas running now ("
                    + ", ".join(sorted(set(others)))
                    + "): a browser logged in through one would be a stranger to the other; "
                    "give every replica the same secret_key file of its data dir (or "
                    "KERNEL_SECRET_KEY)"
                )
        if not (row.seal_check or "").startswith(f"{PREFIX}{keyring.current}:"):
            row.seal_check = keyring.seal(row.id)  # new, or sealed with a key retired since
        row.secret_check = mine

"""The replicas of this installation: each server process has an id and a heartbeat row in
the database (`replicas`), so the others know it is alive. What depends on it: runs are owned
by the replica that sent them and adopted by another when their owner stops beating
(jobs/journal.py `adopt`); the status poller probes only its share of the hosts
(cluster/share.py); live events cross replicas (cluster/relay.py).

On SQLite there is one server by construction (serve.py refuses a second on the same file),
so every other owner is dead at once and a restart re-attaches runs without waiting."""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import uuid
from typing import Any

from sqlalchemy import delete, select, update

from kernel.server.core.db import Database, out_of_space, utcnow
from kernel.server.core.text import iso
from kernel.server.models.cluster import Replica

log = logging.getLogger(__name__)


class Membership:
    def __init__(self, db: Database, heartbeat: float, stale: float) -> None:
        self.db = db
        self.id = str(uuid.uuid4())
        self.heartbeat = heartbeat
        self.stale = stale
        self.single = db.engine.dialect.name == "sqlite"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def live(self) -> list[str]:
        """The replicas alive now (this one always among them), sorted."""
        if self.single:
            return [self.id]
        cut = utcnow() - dt.timedelta(seconds=self.stale)
        with self.db.reading() as s:
            ids = set(s.scalars(select(Replica.id).where(Replica.seen_at > cut)))
        return sorted(ids | {self.id})

    def replicas(self) -> list[dict[str, Any]]:
        """Every replica with a heartbeat row (the gone ones until their row is cleared, an
        hour later), this one first: what ``GET /api/v1/status`` shows."""
        cut = utcnow() - dt.timedelta(seconds=self.stale)
        with self.db.reading() as s:
            rows = s.scalars(select(Replica).order_by(Replica.started_at)).all()
            out = [
                {
                    "id": r.id,
                    "host": r.host,
                    "pid": r.pid,
                    "started_at": iso(r.started_at),
                    "seen_at": iso(r.seen_at),
                    "alive": r.seen_at > cut or r.id == self.id,
                    "me": r.id == self.id,
                }
                for r in rows
            ]
        return sorted(out, key=lambda r: not r["me"])

    def start(self) -> None:
        if self._thread is not None:
            return
        with self.db.session() as s:
            s.add(Replica(id=self.id, host=socket.gethostname()[:255], pid=os.getpid()))
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="kernel-membership", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            try:
                with self.db.session() as s:
                    now = utcnow()
                    s.execute(update(Replica).where(Replica.id == self.id).values(seen_at=now))
                    # Long gone replicas' rows are of no use to anyone.
                    s.execute(delete(Replica).where(Replica.seen_at < now - dt.timedelta(hours=1)))
            except Exception as e:  # the database may be down for a while: keep beating
                if out_of_space(e):  # one line per beat while the disk is full
                    log.error("could not record this replica's heartbeat: the disk is full")
                else:
                    log.exception("could not record this replica's heartbeat")

    def stop(self) -> None:
        """A clean stop says so at once: the others adopt its runs without waiting."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
            try:
                with self.db.session() as s:
                    s.execute(delete(Replica).where(Replica.id == self.id))
            except Exception as e:
                if out_of_space(e):
                    log.error("could not remove this replica's heartbeat: the disk is full")
                else:
                    log.exception("could not remove this replica's heartbeat")

"""Live events across replicas, through PostgreSQL's LISTEN/NOTIFY: every job event a replica
publishes (core/events.py), and every status change its poller finds (status/feed.py), is
also sent on the channel ``kernel_events``; the others publish it to their own readers, so an
event stream on any replica shows every run's output and every host's status.

A notification carries the event itself, or — when it is too big for one (PostgreSQL allows
8000 bytes) — the id of a row of ``event_payloads`` holding it. Events are sent by one thread,
in batches of one transaction each (notifications go out at commit, in order), as many events
in one notification as fit, so a burst of output costs a few round trips, not one per line.
Payload rows live ten minutes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from sqlalchemy import delete, insert, select, text

from kernel.server.core.db import Database, utcnow
from kernel.server.core.events import EventBus
from kernel.server.models.cluster import EventPayload

log = logging.getLogger(__name__)
CHANNEL = "kernel_events"
INLINE_MAX = 7000  # bytes of a notification's payload; bigger events go by reference
KEEP = 600.0  # seconds payload rows are kept for late readers
BATCH = 500  # events per transaction at most


Changes = list[tuple[dict[str, Any], list[str]]]  # status/feed.py: hosts and what changed


class Feed(Protocol):
    """The status feed (status/feed.py `StatusFeed`), as the relay sees it."""

    relay: Callable[[Changes], None] | None

    def publish_here(self, changed: Changes) -> None: ...


class Relay:
    """A background service (PostgreSQL only): sends this replica's events, receives the
    others'."""

    def __init__(self, db: Database, bus: EventBus, origin: str, feed: Feed | None = None) -> None:
        self.db = db
        self.bus = bus
        self.feed = feed
        self.origin = origin
        # What to send: {"j": job id, "t": type, "d": data}, or {"s": status changes}.
        self._out: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._listening = threading.Event()
        self._head = '{"o": ' + json.dumps(origin) + ', "m": ['  # how our notifications begin

    def start(self) -> None:
        if self._threads:
            return
        self._stop.clear()
        self.bus.relay = self.send
        if self.feed is not None:
            self.feed.relay = self.send_status
        for target, name in ((self._listen, "listen"), (self._send, "send")):
            t = threading.Thread(target=target, name=f"kernel-relay-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        self._listening.wait(10)

    def stop(self) -> None:
        self.bus.relay = None
        if self.feed is not None:
            self.feed.relay = None
        self._stop.set()
        self._out.put(None)
        for t in self._threads:
            t.join(5)
        self._threads = []

    def send(self, job_id: int, type_: str, data: dict[str, Any]) -> None:
        self._out.put({"j": job_id, "t": type_, "d": data})

    def send_status(self, changed: Changes) -> None:
        self._out.put({"s": changed})

    # -- sending -------------------------------------------------------------------------------
    def _send(self) -> None:
        swept = time.monotonic()
        while not self._stop.is_set():
            first = self._out.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < BATCH:
                try:
                    item = self._out.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._stop.set()
                    break
                batch.append(item)
            try:
                self._write(batch)
            except Exception:  # the database is away: these events are lost for the others
                log.exception("could not relay %d live events to the other replicas", len(batch))
            if time.monotonic() - swept > 60:
                swept = time.monotonic()
                self._sweep()

    def _write(self, batch: list[dict[str, Any]]) -> None:
        with self.db.engine.begin() as conn:
            for body in self._packed(conn, batch):
                conn.execute(text("SELECT pg_notify(:c, :b)"), {"c": CHANNEL, "b": body})

    def _packed(self, conn: Any, batch: list[dict[str, Any]]) -> list[str]:
        """The batch's notifications: as many events, in order, as fit in each
        (``{"o": origin, "m": [event, …]}``) — a 10 000-host job sends ~30 000 events, one
        statement each cost the relay's thread more than the job's writer (bench_scale.py);
        an event too big for one goes by reference (``{"ref": id}`` in its place)."""
        head = self._head
        bodies: list[str] = []
        parts: list[str] = []
        size = len(head) + 2
        for item in batch:
            one = json.dumps(item)
            n = len(one.encode())
            if len(head) + n + 2 > INLINE_MAX:
                body = json.dumps({"o": self.origin, **item})
                stored = insert(EventPayload).values(body=body, created_at=utcnow())
                ref = conn.execute(stored.returning(EventPayload.id)).scalar_one()
                one = json.dumps({"ref": ref})
                n = len(one)
            if parts and size + n + 1 > INLINE_MAX:
                bodies.append(head + ",".join(parts) + "]}")
                parts, size = [], len(head) + 2
            parts.append(one)
            size += n + 1
        if parts:
            bodies.append(head + ",".join(parts) + "]}")
        return bodies

    def _sweep(self) -> None:
        try:
            cut = utcnow() - dt.timedelta(seconds=KEEP)
            with self.db.engine.begin() as conn:
                conn.execute(delete(EventPayload).where(EventPayload.created_at < cut))
        except Exception:
            log.exception("could not remove old relayed events")

    # -- receiving -----------------------------------------------------------------------------
    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                raw = self.db.engine.raw_connection()
            except Exception:
                log.exception("cannot listen for the other replicas' events; retrying")
                self._listening.set()
                self._stop.wait(2)
                continue
            try:
                conn: Any = raw.driver_connection
                conn.autocommit = True
                conn.execute(f"LISTEN {CHANNEL}")
                # Events of the others sent before now (or while the connection was lost)
                # never reach this bus: jobs that began before are not complete here.
                self.bus.complete_since = time.time()
                self._listening.set()
                while not self._stop.is_set():
                    for note in conn.notifies(timeout=1.0):
                        self._receive(note.payload)
            except Exception:
                log.exception("lost the connection for the other replicas' events; reconnecting")
                self._stop.wait(1)
            finally:
                with contextlib.suppress(Exception):  # it is closed either way
                    raw.invalidate()  # a LISTENing connection must not go back to the pool

    def _receive(self, payload: str) -> None:
        if payload.startswith(self._head):  # this replica's own: not even parsed
            return
        try:
            note = json.loads(payload)
            if note.get("o") == self.origin:
                return
        except Exception:
            log.exception("a relayed event could not be read")
            return
        for event in note["m"] if "m" in note else [note]:
            self._deliver(event)

    def _deliver(self, event: dict[str, Any]) -> None:
        try:
            if "ref" in event:
                with self.db.engine.connect() as conn:
                    body = conn.execute(
                        select(EventPayload.body).where(EventPayload.id == event["ref"])
                    ).scalar_one_or_none()
                if body is None:
                    return  # swept: readers that far behind get a snapshot
                event = json.loads(body)
            if "s" in event:
                if self.feed is not None:
                    self.feed.publish_here([(host, list(what)) for host, what in event["s"]])
                return
            self.bus.publish_here(int(event["j"]), str(event["t"]), **event["d"])
        except Exception:
            log.exception("a relayed event could not be read")

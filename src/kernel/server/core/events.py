"""Live job events: an in-memory, per-job sequence fed by the runner and read by SSE clients.

Each event has an id ``<epoch>-<seq>``; the epoch changes with every server process, so a
client resuming with a ``Last-Event-ID`` from before a restart (or one whose events were
dropped to bound memory) gets a fresh snapshot from the database instead of a gap.
The event JSON is documented in docs/api.md.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from kernel.server.core.sse import frame

MAX_EVENTS_PER_JOB = 20000
MAX_BYTES_PER_JOB = 8 * 1024 * 1024
KEEP_FINISHED = 600.0  # seconds a finished job's events stay for late readers


@dataclass
class Event:
    seq: int
    type: str
    data: dict[str, Any]

    def sse(self, epoch: str) -> str:
        return frame(epoch, self.seq, self.type, self.data)


@dataclass
class _Stream:
    events: list[Event] = field(default_factory=list)
    first_seq: int = 1  # seq of events[0]; earlier ones were dropped
    next_seq: int = 1
    size: int = 0
    ended_at: float | None = None


class Slot:
    """One open event stream; released once, whichever comes first: the stream ends, or the
    server closes the response (client gone, or it never started iterating)."""

    def __init__(self, bus: EventBus) -> None:
        self._bus = bus
        self._released = False

    def release(self) -> None:
        with self._bus._cond:
            if not self._released:
                self._released = True
                self._bus._open -= 1


class Releasing:
    """A WSGI response iterable that releases its slot when closed."""

    def __init__(self, it: Iterator[str], slot: Slot) -> None:
        self._it = it
        self._slot = slot

    def __iter__(self) -> Releasing:
        return self

    def __next__(self) -> str:
        return next(self._it)

    def close(self) -> None:
        try:
            close = getattr(self._it, "close", None)
            if close is not None:
                close()
        finally:
            self._slot.release()


class EventBus:
    def __init__(self) -> None:
        self.epoch = secrets.token_hex(4)
        self._streams: dict[int, _Stream] = {}
        self._cond = threading.Condition()
        self._open = 0  # event streams being served
        self._collected = 0.0  # when finished jobs' events were last dropped
        # Where events go for the other replicas (cluster/relay.py), if there are any; and
        # since when (time.time()) their events have all been received here without a gap:
        # a job that began before that may miss some here (its snapshot reads the database).
        self.relay: Callable[[int, str, dict[str, Any]], None] | None = None
        self.complete_since = 0.0

    def open_stream(self, limit: int) -> Slot | None:
        with self._cond:
            if self._open >= limit:
                return None
            self._open += 1
            return Slot(self)

    def publish(self, job_id: int, type_: str, **data: Any) -> None:
        """An event of this process (also handed to the relay, for the other replicas)."""
        self.publish_here(job_id, type_, **data)
        if self.relay is not None:
            self.relay(job_id, type_, data)

    def publish_here(self, job_id: int, type_: str, **data: Any) -> None:
        """An event for this process's readers only (one relayed from another replica)."""
        with self._cond:
            st = self._streams.setdefault(job_id, _Stream())
            ev = Event(st.next_seq, type_, {"job_id": job_id, **data})
            st.next_seq += 1
            size = len(str(data.get("data", ""))) + 200
            # Output is the only bulky event; when over budget drop the oldest events (readers
            # behind that point get a snapshot instead, the database keeps the output).
            st.events.append(ev)
            st.size += size
            while st.events and (
                len(st.events) > MAX_EVENTS_PER_JOB or st.size > MAX_BYTES_PER_JOB
            ):
                old = st.events.pop(0)
                st.size -= len(str(old.data.get("data", ""))) + 200
                st.first_seq = old.seq + 1
            if type_ == "end":
                st.ended_at = time.monotonic()
            self._cond.notify_all()
        self._collect()

    def output_so_far(self, job_id: int) -> tuple[int, dict[str, dict[str, str]] | None]:
        """The last seq and every run's output up to it; None when the bus does not hold all
        of it (events dropped, or none kept for this job): then the database has to fill in."""
        with self._cond:
            st = self._streams.get(job_id)
            if st is None:  # none kept (finished long ago, or before a restart): read the DB
                return 0, None
            if st.first_seq != 1:
                return st.next_seq - 1, None
            out: dict[str, dict[str, str]] = {}
            for ev in st.events:
                if ev.type == "output":
                    run = out.setdefault(str(ev.data.get("run")), {"stdout": "", "stderr": ""})
                    stream = "stderr" if ev.data.get("stream") == "stderr" else "stdout"
                    run[stream] += str(ev.data.get("data", ""))
            return st.next_seq - 1, out

    def last_seq(self, job_id: int) -> int:
        with self._cond:
            st = self._streams.get(job_id)
            return st.next_seq - 1 if st else 0

    def parse_id(self, raw: str | None) -> int | None:
        """The seq of a Last-Event-ID from this process, else None (→ send a snapshot)."""
        if not raw:
            return None
        epoch, _, seq = raw.strip().partition("-")
        if epoch != self.epoch or not seq.isdigit() or len(seq) > 18:
            return None
        return int(seq)

    def after(self, job_id: int, seq: int, timeout: float) -> list[Event] | None:
        """Events with seq > ``seq``, waiting up to ``timeout`` for one; None if some were
        dropped (the reader must start again from a snapshot)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                st = self._streams.get(job_id)
                if st is not None:
                    if seq + 1 < st.first_seq:
                        return None
                    if st.next_seq - 1 > seq:
                        return st.events[seq + 1 - st.first_seq :]
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                self._cond.wait(left)

    def _collect(self) -> None:
        # Every publish used to walk every job's stream (hundreds under load, on the runner's
        # hot path); once a second is plenty for a 600 s retention.
        now = time.monotonic()
        if now - self._collected < 1.0:
            return
        self._collected = now
        with self._cond:
            old = [
                j
                for j, st in self._streams.items()
                if st.ended_at is not None and now - st.ended_at > KEEP_FINISHED
            ]
            for j in old:
                del self._streams[j]

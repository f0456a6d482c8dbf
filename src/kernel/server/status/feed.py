"""Live status changes: an in-memory sequence fed by the poller after each batch it stores
(which hosts changed state, unit states, or got new figures) and read by the status event
stream (stream.py). Bounded: a reader that falls behind the kept events starts again from a
snapshot, as a job's event reader does (core/events.py)."""

from __future__ import annotations

import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

KEEP_EVENTS = 5000


@dataclass(frozen=True)
class Change:
    seq: int
    host: dict[str, Any]  # status/brief.py's shape
    changed: tuple[str, ...]  # "state", "units", "figures"


class StatusFeed:
    def __init__(self, keep: int = KEEP_EVENTS) -> None:
        self.epoch = secrets.token_hex(4)
        self._events: deque[Change] = deque(maxlen=keep)
        self._next = 1
        self._cond = threading.Condition()
        # Where changes go for the other replicas (cluster/relay.py), if there are any.
        self.relay: Callable[[list[tuple[dict[str, Any], list[str]]]], None] | None = None

    def publish(self, changed: list[tuple[dict[str, Any], list[str]]]) -> None:
        """Hosts whose brief changed, each with what changed in it (also handed to the relay:
        with replicas, each probes its share of the hosts and readers of any see them all)."""
        self.publish_here(changed)
        if changed and self.relay is not None:
            self.relay(changed)

    def publish_here(self, changed: list[tuple[dict[str, Any], list[str]]]) -> None:
        """Changes for this process's readers only (relayed from another replica)."""
        if not changed:
            return
        with self._cond:
            for host, what in changed:
                self._events.append(Change(self._next, host, tuple(what)))
                self._next += 1
            self._cond.notify_all()

    @property
    def last_seq(self) -> int:
        with self._cond:
            return self._next - 1

    def parse_id(self, raw: str | None) -> int | None:
        if not raw:
            return None
        epoch, _, seq = raw.strip().partition("-")
        if epoch != self.epoch or not seq.isdigit() or len(seq) > 18:
            return None
        return int(seq)

    def after(self, seq: int, timeout: float) -> list[Change] | None:
        """Changes after ``seq``, waiting up to ``timeout`` for one; None when some of them
        are no longer kept (start again from a snapshot)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if self._events and seq + 1 < self._events[0].seq:
                    return None
                if self._next - 1 > seq:
                    first = self._events[0].seq if self._events else self._next
                    return list(self._events)[seq + 1 - first :]
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                self._cond.wait(left)

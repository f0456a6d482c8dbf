"""The login rate limiter (in memory, per process)."""

from __future__ import annotations

import threading
import time
from collections import deque


class LoginLimiter:
    """Counts failed logins per (user name, source address) in a sliding window.

    In memory, per process: a restart forgets, which only ever helps a legitimate user.
    """

    def __init__(self, max_failures: int, window: float) -> None:
        self.max_failures = max_failures
        self.window = window
        self._failures: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        q = self._failures.setdefault(key, deque())
        while q and q[0] <= now - self.window:
            q.popleft()
        return q

    def retry_after(self, name: str, source: str, now: float | None = None) -> float:
        """Seconds until this pair may try again; 0 when it may try now."""
        now = time.monotonic() if now is None else now
        with self._lock:
            q = self._recent((name.lower(), source), now)
            if len(q) < self.max_failures:
                return 0.0
            return max(0.0, q[0] + self.window - now)

    def failed(self, name: str, source: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._recent((name.lower(), source), now).append(now)
            if len(self._failures) > 10000:  # bound memory under a spray of names
                self._failures = {k: v for k, v in self._failures.items() if v}

    def succeeded(self, name: str, source: str) -> None:
        with self._lock:
            self._failures.pop((name.lower(), source), None)

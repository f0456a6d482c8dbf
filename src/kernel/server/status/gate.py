"""A semaphore whose size may change: the poller's probes in flight (probelimit.py sets it)."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable


class Gate:
    """Like a semaphore, but its size (``size()``) may change between acquisitions, and a
    holder may give its slot back before it is done (`release` once, from the loop)."""

    def __init__(self, size: Callable[[], int]) -> None:
        self._size = size
        self._held = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def acquire(self) -> None:
        while self._held >= self._size():
            fut = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            try:
                await fut
            except asyncio.CancelledError:
                if fut in self._waiters:
                    self._waiters.remove(fut)
                self._wake()  # a wake-up meant for it goes to the next in line
                raise
        self._held += 1

    def release(self) -> None:
        self._held -= 1
        self._wake()

    def _wake(self) -> None:
        free = self._size() - self._held
        while free > 0 and self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                free -= 1

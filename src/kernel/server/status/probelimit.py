"""How many status probes the poller keeps in flight: an adaptive limit (pure logic).

More probes in flight only help while nothing queues. Past that point — the server's CPU, or
(on a test bed) CPUs the hosts share with the server — every extra probe just waits, and each
host's probe time grows with the number in flight. So the limit follows a queueing signal,
the way TCP Vegas does: each probe's time is compared with the best time *that host* has
shown lately (its own network distance and probe cost), and the median of that ratio over a
window of probes steers the limit:

- ratio above ``high`` (probes take half as long again as their host's best): shrink by
  ``backoff``;
- ratio below ``low``: grow (doubling while it has never backed off — slow start — then by a
  quarter);
- in between: hold.

A far-away host has a high best time of its own, so distance alone never shrinks the limit;
only waiting does. A host's first probe only sets its bar (there is nothing to compare it
with), so the first round after a start runs at ``start`` probes in flight and the bars are
taken with little queueing; the limit then grows from there. A host's best time drifts up
slowly (``drift`` per sample), so a host that became slower for good is not compared with its
old self for ever. Bounds: ``floor`` ..
``ceiling`` (STATUS_CONCURRENCY). Failed probes (timeouts, refusals) carry no timing signal and
are not fed in.
"""

from __future__ import annotations

import statistics
from collections.abc import Hashable
from dataclasses import dataclass, field


@dataclass
class ProbeLimit:
    ceiling: int
    floor: int = 4
    start: int = 4
    high: float = 1.5
    low: float = 1.2
    backoff: float = 0.75
    drift: float = 1.02
    limit: float = field(init=False)
    slow_start: bool = field(default=True, init=False)
    _best: dict[Hashable, float] = field(default_factory=dict, init=False, repr=False)
    _window: list[float] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.ceiling < 1:
            raise ValueError("ceiling must be >= 1")
        self.floor = max(1, min(self.floor, self.ceiling))
        self.limit = float(max(self.floor, min(self.start, self.ceiling)))

    @property
    def current(self) -> int:
        """Probes allowed in flight now."""
        return max(self.floor, min(self.ceiling, int(self.limit)))

    def sample(self, host: Hashable, seconds: float) -> None:
        """One answered probe of ``host`` that took ``seconds`` (slot held to answer)."""
        if not seconds > 0:  # also NaN
            return
        best = self._best.get(host)
        if best is None:  # nothing to compare with yet: the first probe only sets the bar
            self._best[host] = seconds
            return
        best = min(best * self.drift, seconds)
        self._best[host] = best
        self._window.append(seconds / best)
        if len(self._window) >= max(4, self.current):
            self._decide(statistics.median(self._window))
            self._window.clear()

    def forget(self, host: Hashable) -> None:
        self._best.pop(host, None)

    def _decide(self, ratio: float) -> None:
        if ratio > self.high:
            self.slow_start = False
            self.limit = max(float(self.floor), self.limit * self.backoff)
        elif ratio < self.low:
            grown = self.limit * 2 if self.slow_start else max(self.limit + 1, self.limit * 1.25)
            self.limit = min(float(self.ceiling), grown)

"""Metrics history (pure functions): the numbers kept per probe (`metric_values`) and the
retention policy that compacts them (`compact`: every sample for a day, 5-minute
count-weighted means for a week, nothing older; docs/status.md)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from kernel.server.status.report import ProbeReport


@dataclass(frozen=True)
class MetricPoint:
    """One stored sample (count=1) or the mean of `count` samples in a bucket starting at t."""

    t: float
    values: Mapping[str, float]
    count: int = 1


def metric_values(report: ProbeReport, *, cpu_percent: float | None = None) -> dict[str, float]:
    """The numbers kept in history for one probe. `cpu_percent` is the usage over the poll
    interval (`cpu_usage` of two probes' counters); without it, the probe's own figure (only
    with `cpu_window`, or in outputs of older probes that sampled 0.2 s) is used if any."""
    m = report.metrics
    vals: dict[str, float | int | None] = {
        "cpu_percent": cpu_percent if cpu_percent is not None else m.cpu_percent,
        "load1": m.load1,
        "load5": m.load5,
        "load15": m.load15,
        "mem_total": m.mem_total,
        "mem_used": m.mem_used,
        "swap_total": m.swap_total,
        "swap_used": m.swap_used,
        "uptime": m.uptime,
    }
    if m.disks:
        vals["disk_total"] = sum(d.total for d in m.disks)
        vals["disk_used"] = sum(d.used for d in m.disks)
    return {k: float(v) for k, v in vals.items() if v is not None}


@dataclass(frozen=True)
class RetentionPolicy:
    raw_seconds: float = 24 * 3600  # every sample kept this long
    keep_seconds: float = 7 * 24 * 3600  # downsampled points kept this long
    bucket_seconds: float = 300  # size of a downsampled point

    def __post_init__(self) -> None:
        if not 0 < self.bucket_seconds <= self.raw_seconds <= self.keep_seconds:
            raise ValueError("need 0 < bucket_seconds <= raw_seconds <= keep_seconds")


DEFAULT_RETENTION = RetentionPolicy()


def compact(
    points: Iterable[MetricPoint], now: float, policy: RetentionPolicy = DEFAULT_RETENTION
) -> list[MetricPoint]:
    """Apply the retention policy: points newer than raw_seconds stay as they are; older ones
    are merged into buckets aligned to multiples of bucket_seconds (count-weighted means, so
    merging again gives the same result); points older than keep_seconds are dropped.

    Idempotent: compact(compact(p, now), now) == compact(p, now).
    """
    raw_cut = now - policy.raw_seconds
    keep_cut = now - policy.keep_seconds
    live = [p for p in points if p.t >= keep_cut]
    raw = [p for p in live if p.t >= raw_cut]
    older = downsample((p for p in live if p.t < raw_cut), policy.bucket_seconds)
    # A bucket that begins before the horizon goes too: its samples are expiring anyway.
    return sorted(raw + [b for b in older if b.t >= keep_cut], key=lambda p: p.t)


def downsample(points: Iterable[MetricPoint], bucket_seconds: float) -> list[MetricPoint]:
    """One point per bucket (aligned to multiples of bucket_seconds of Unix time) holding the
    count-weighted mean of each value; a point that already is a bucket mean keeps its weight."""
    buckets: dict[float, list[MetricPoint]] = {}
    for p in points:
        start = math.floor(p.t / bucket_seconds) * bucket_seconds
        buckets.setdefault(start, []).append(p)
    return sorted((_merge(t, group) for t, group in buckets.items()), key=lambda p: p.t)


def _merge(start: float, group: Sequence[MetricPoint]) -> MetricPoint:
    if len(group) == 1 and group[0].t == start:
        return group[0]
    sums: dict[str, float] = {}
    weights: dict[str, int] = {}
    for p in group:
        for k, v in p.values.items():
            sums[k] = sums.get(k, 0.0) + v * p.count
            weights[k] = weights.get(k, 0) + p.count
    values = {k: sums[k] / weights[k] for k in sums}
    return MetricPoint(t=start, values=values, count=sum(p.count for p in group))

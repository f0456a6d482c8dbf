"""Which problems each kind of rule sees in the fleet's state right now (pure functions over
what the database holds: snapshot.py reads it). A `Verdict` is the problems present and the
servers that cannot be judged now (an offline host's disks and units are as of its last
probe): alerts on those servers stay as they are, neither raised nor cleared."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kernel.server.alerts.rules import seconds

# Run states that mean "this job failed here" (a cancelled run was someone's choice).
FAILED_RUNS = frozenset({"failed", "timed_out", "unreachable", "lost"})


@dataclass(frozen=True)
class Host:
    """A live joined server and its last status (status/store.py writes it)."""

    id: int
    name: str
    tags: tuple[str, ...] = ()
    state: str = "unknown"  # unknown | online | offline (host_status)
    last_ok_at: float | None = None
    last_error: str | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict)
    units: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Problem:
    server_id: int | None
    server_name: str | None
    subject: str  # what is wrong there: "offline", "disk /var", "service sums", …
    summary: str  # one line for people
    since: float | None = None  # when it began, if known (else: when first seen)
    value: float | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Verdict:
    problems: tuple[Problem, ...] = ()
    unknown: frozenset[int] = frozenset()  # servers that cannot be judged now


def in_scope(tags: Iterable[str], wanted: Sequence[str]) -> bool:
    """A rule limited by tags covers servers with any of them; no tags: every server."""
    return not wanted or bool(set(tags) & set(wanted))


def offline(hosts: Iterable[Host], after: float, now: float) -> Verdict:
    """Hosts the poller holds offline; ``since`` is their last good probe, so the rule's
    "for more than N seconds" counts from when the host stopped answering."""
    found = []
    for h in hosts:
        if h.state != "offline":
            continue
        since = h.last_ok_at
        gone = f"for {seconds(now - since)}" if since is not None else "since it joined"
        why = f": {h.last_error[:300]}" if h.last_error else ""
        found.append(
            Problem(h.id, h.name, "offline", f"{h.name} is offline, not answering {gone}{why}",
                    since=since, detail={"last_error": h.last_error, "after": after})
        )  # fmt: skip
    return Verdict(tuple(found))


def services(
    hosts: Iterable[Host],
    units: Mapping[str, str],
    seen_active: set[tuple[int, str]],
    only: Sequence[str] = (),
) -> Verdict:
    """Catalogue units (``units``: unit → service) that failed, or are inactive (or stuck
    restarting) on a host where they were seen active. An offline host's units are unknown."""
    found, unknown = [], set()
    for h in hosts:
        if h.state != "online":
            unknown.add(h.id)
            continue
        for unit, service in sorted(units.items()):
            if only and service not in only:
                continue
            st = h.units.get(unit)
            if not isinstance(st, Mapping) or not st.get("installed"):
                continue
            active = str(st.get("active_state") or "")
            sub = str(st.get("sub_state") or "")
            was_active = (h.id, unit) in seen_active
            if active == "failed":
                what = "failed"
            elif active == "inactive" and was_active:
                what = "inactive"
            elif sub == "auto-restart" and was_active:
                what = "restarting over and over (auto-restart)"
            else:
                continue
            found.append(
                Problem(h.id, h.name, f"service {service}",
                        f"{service} ({unit}) is {what} on {h.name}",
                        detail={"unit": unit, "active_state": active, "sub_state": sub})
            )  # fmt: skip
    return Verdict(tuple(found), frozenset(unknown))


def active_units(hosts: Iterable[Host]) -> tuple[set[tuple[int, str]], set[tuple[int, str]]]:
    """From the online hosts: (server, unit) pairs active now, and those not installed (any
    more): the memory of "was active" is kept for the first and forgotten for the second."""
    active, gone = set(), set()
    for h in hosts:
        if h.state != "online":
            continue
        for unit, st in h.units.items():
            if not isinstance(st, Mapping):
                continue
            if st.get("active"):
                active.add((h.id, unit))
            elif not st.get("installed"):
                gone.add((h.id, unit))
    return active, gone


def disk_use(d: Mapping[str, Any]) -> float | None:
    """Percent used as df says it: used / (used + available) (root's reserve not counted)."""
    try:
        used, avail = float(d["used"]), float(d["available"])
    except (KeyError, TypeError, ValueError):
        return None
    return 100.0 * used / (used + avail) if used + avail > 0 else None


def disks(hosts: Iterable[Host], percent: float, mounts: Sequence[str] = ()) -> Verdict:
    found, unknown = [], set()
    for h in hosts:
        if h.state != "online":
            unknown.add(h.id)
            continue
        for d in h.metrics.get("disks") or []:
            if not isinstance(d, Mapping):
                continue
            mount = str(d.get("mount") or "")
            if mounts and mount not in mounts:
                continue
            use = disk_use(d)
            if use is None or use <= percent:
                continue
            found.append(
                Problem(h.id, h.name, f"disk {mount}",
                        f"disk {mount} on {h.name} is {use:.1f} % full (above {percent:g} %)",
                        value=round(use, 2), detail={"mount": mount, "device": d.get("device")})
            )  # fmt: skip
    return Verdict(tuple(found), frozenset(unknown))


def sustained_above(
    points: Sequence[tuple[float, float]], above: float, window: float, now: float, max_gap: float
) -> tuple[bool | None, float | None]:
    """Has the series been above ``above`` for the last ``window`` seconds? (True/False, or
    None when it cannot be told: no recent sample), and since when it has been above. Samples
    further apart than ``max_gap`` break the run (the host was not answering)."""
    pts = sorted(points)
    if not pts or now - pts[-1][0] > max_gap:
        return None, None
    if pts[-1][1] <= above:
        return False, None
    start = pts[-1][0]
    for (t, v), (t_next, _) in zip(reversed(pts[:-1]), reversed(pts[1:]), strict=True):
        if v <= above or t_next - t > max_gap:
            break
        start = t
    return now - start >= window, start


def load(
    hosts: Iterable[Host],
    series: Mapping[int, Sequence[tuple[float, float]]],
    above: float,
    minutes: float,
    metric: str,
    now: float,
    max_gap: float,
) -> Verdict:
    found, unknown = [], set()
    for h in hosts:
        pts = series.get(h.id) or ()
        held, start = sustained_above(pts, above, minutes * 60, now, max_gap)
        if held is None:
            unknown.add(h.id)
            continue
        if held and start is not None:
            last = max(pts)[1]
            found.append(
                Problem(h.id, h.name, f"load {metric}",
                        f"{metric} on {h.name} is {last:g}, above {above:g} for "
                        f"{seconds(now - start)}", since=start, value=last)
            )  # fmt: skip
    return Verdict(tuple(found), frozenset(unknown))


@dataclass(frozen=True)
class JobRun:
    """A run of a job that finished lately, with what names the job for alerts."""

    job_id: int
    kind: str
    title: str
    meta: Mapping[str, Any]
    parent_id: int | None
    finished_at: float
    server_id: int
    server_name: str
    state: str
    exit_code: int | None = None
    error: str | None = None


def job_identity(run: JobRun, parents: Mapping[int, int | None]) -> str:
    """What a run of this job is a run *of*, so that a later success of the same thing clears
    the failure: a schedule (its firings), a service operation, an init script; a command and
    its reruns (followed back through ``parents``: job id → parent id, as far as known)."""
    meta = run.meta or {}
    if run.kind == "schedule":
        sid = meta.get("schedule_id", meta.get("schedule"))
        if sid is not None:
            return f"schedule {str(sid)[:64]}"
    if run.kind == "service" and meta.get("service"):
        return f"service {str(meta['service'])[:64]} {str(meta.get('op') or '')[:16]}".rstrip()
    if run.kind == "init" and meta.get("script"):
        return f"init {str(meta['script'])[:128]}"
    if run.kind == "command":
        root, hops = run.job_id, 0
        parent = run.parent_id
        while parent is not None and hops < 1000:
            root, hops = parent, hops + 1
            parent = parents.get(parent)
        return f"job {root}"
    return f"{run.kind[:32]} {run.title[:100]}".rstrip()


def jobs(
    runs: Iterable[JobRun],
    parents: Mapping[int, int | None],
    hosts: Mapping[int, Host],
    tags: Sequence[str],
    kinds: Sequence[str] = (),
) -> Verdict:
    """Per server and job identity, the latest run: failed → a problem. ``hosts``: the live
    servers (a tag-limited rule only counts runs on servers with its tags)."""
    latest: dict[tuple[int, str], JobRun] = {}
    for r in runs:
        if kinds and r.kind not in kinds:
            continue
        if r.state not in FAILED_RUNS and r.state != "ok":
            continue  # cancelled: says nothing either way
        if tags and not (r.server_id in hosts and in_scope(hosts[r.server_id].tags, tags)):
            continue
        key = (r.server_id, job_identity(r, parents))
        seen = latest.get(key)
        if seen is None or (r.finished_at, r.job_id) > (seen.finished_at, seen.job_id):
            latest[key] = r
    found = []
    for (sid, identity), r in sorted(latest.items()):
        if r.state not in FAILED_RUNS:
            continue
        how = f"exit {r.exit_code}" if r.state == "failed" else r.state.replace("_", " ")
        why = f": {r.error[:200]}" if r.error else ""
        title = f" ({r.title[:80]})" if r.title and not identity.startswith("init ") else ""
        found.append(
            Problem(sid, r.server_name, identity,
                    f"{identity}{title} failed on {r.server_name} ({how}{why}); job {r.job_id}",
                    since=r.finished_at,
                    detail={"job_id": r.job_id, "kind": r.kind, "state": r.state,
                            "exit_code": r.exit_code})
        )  # fmt: skip
    return Verdict(tuple(found))

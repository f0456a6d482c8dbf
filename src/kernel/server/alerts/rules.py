"""What an alert rule is (pure): its kinds, the thresholds each kind takes, and how a rule is
said in words. Thresholds arrive as flat fields of the API body (`percent`, `minutes`, …);
`params_for` keeps those that apply to the kind and refuses the others, so a typo in the
kind of a rule is a clear 400 rather than a rule that never fires."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kernel.exceptions import InvalidInput

KINDS = ("offline", "service", "job", "disk", "load")
LOAD_METRICS = ("load1", "load5", "load15")
REQUIRED = None  # a threshold with no default

# Each kind's thresholds and their defaults (REQUIRED: must be given).
PARAMS: dict[str, dict[str, Any]] = {
    "offline": {"seconds": 60.0},  # not answering for this long
    "service": {"services": []},  # catalogue services to watch; empty: all
    "job": {"kinds": [], "window": 86400.0},  # job kinds (empty: all); how far back to look
    "disk": {"percent": REQUIRED, "mounts": []},  # use above; mounts (empty: all)
    "load": {"above": REQUIRED, "minutes": 5.0, "metric": "load1"},
}
PARAM_NAMES = tuple(sorted({name for params in PARAMS.values() for name in params}))


def params_for(
    kind: str, given: Mapping[str, Any], base: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The stored thresholds of a ``kind`` rule: ``base`` (the rule's current ones, on an
    edit) or the defaults, with ``given`` on top. Refuses thresholds of other kinds and a
    missing required one, naming them."""
    if kind not in PARAMS:
        raise InvalidInput(f"'kind' must be one of {', '.join(KINDS)}")
    takes = PARAMS[kind]
    foreign = sorted(set(given) - set(takes))
    if foreign:
        names = ", ".join(f"'{n}'" for n in foreign)
        said = ", ".join(f"'{n}'" for n in takes) or "nothing"
        what = "is not a threshold" if len(foreign) == 1 else "are not thresholds"
        raise InvalidInput(f"{names} {what} of {kind} rules (they take {said})")
    out = {**takes, **(base or {}), **given}
    missing = [n for n, v in out.items() if v is REQUIRED]
    if missing:
        raise InvalidInput(f"a {kind} rule needs '{missing[0]}'")
    return {n: out[n] for n in takes}


def describe(kind: str, params: Mapping[str, Any]) -> str:
    """The rule's condition in words, for messages and tables."""
    p = params
    if kind == "offline":
        return f"server not answering for more than {seconds(p.get('seconds', 60))}"
    if kind == "service":
        which = ", ".join(p.get("services") or []) or "any catalogue service"
        return f"{which}: unit failed, or inactive where it was active"
    if kind == "job":
        which = ", ".join(p.get("kinds") or []) or "any"
        return f"the last {which} job on a server failed (jobs of the last {seconds(p['window'])})"
    if kind == "disk":
        where = ", ".join(p.get("mounts") or []) or "any filesystem"
        return f"disk use above {p['percent']:g} % on {where}"
    if kind == "load":
        return f"{p.get('metric', 'load1')} above {p['above']:g} for {p['minutes']:g} min"
    return kind


def seconds(value: float) -> str:
    """A duration the way messages say it: 45 s, 5 min, 2 h, 1 d 2 h."""
    v = round(float(value))
    if v < 120:
        return f"{v} s"
    if v < 7200:
        return f"{v // 60} min" + (f" {v % 60} s" if v % 60 and v < 600 else "")
    if v < 2 * 86400:
        return f"{v // 3600} h" + (f" {v % 3600 // 60} min" if v % 3600 // 60 else "")
    return f"{v // 86400} d" + (f" {v % 86400 // 3600} h" if v % 86400 // 3600 else "")

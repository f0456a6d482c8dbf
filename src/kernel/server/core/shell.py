"""Every shell line Kernel sends to an agent is built here, from validated names.

Names (services, units, init scripts, artifact path parts) are checked against one pattern
before they get anywhere near a shell, and even then they are passed through `shlex.quote`.
Nothing outside this module pastes strings into shell lines: other modules call the builders
below and wrap the result in a `RemoteCommand`.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from kernel.exceptions import InvalidName
from kernel.names import NAME_RE

__all__ = [
    "EXIT_UNIT_NOT_GONE",
    "EXIT_UNIT_UNKNOWN",
    "MAX_LOG_LINES",
    "SYSTEMCTL_ACTIONS",
    "InvalidName",
    "RemoteCommand",
    "join",
    "journal_tail",
    "quote",
    "run_stdin_script",
    "systemctl",
    "systemctl_show",
    "systemctl_status",
    "unit_gone_check",
    "unit_known_check",
    "unit_name",
    "validate_name",
]


# Unit types a catalogue entry may name explicitly; a bare name means `<name>.service`,
# which is also what systemctl itself assumes.
UNIT_SUFFIXES = (".service", ".socket", ".timer", ".target", ".path", ".mount")

SYSTEMCTL_ACTIONS = ("start", "stop", "restart", "enable", "disable")

MAX_LOG_LINES = 10_000

# Exit codes of the checks that follow a script; chosen outside the range scripts and
# systemctl normally use so the UI can tell "your script failed" from "the check failed".
EXIT_UNIT_UNKNOWN = 97  # deploy script exited 0 but systemd does not know the unit
EXIT_UNIT_NOT_GONE = 98  # remove script exited 0 but systemd still has the unit

quote = shlex.quote
join = shlex.join


@dataclass(frozen=True)
class RemoteCommand:
    """One command for a job to run on each target, as the agent's `/api/v2/exec` takes it."""

    cmd: str  # the bash line the agent runs
    stdin: str | None = None  # e.g. a deploy script for `bash -s`
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    timeout: float = 600.0
    title: str = ""  # what the UI/audit shows, e.g. "deploy sums"


def validate_name(kind: str, value: object) -> str:
    """Return `value` if it is an allowed name (ARCHITECTURE §4), else raise InvalidName.

    `kind` says what the name is for ("service", "unit", "init script", "artifact") and only
    shapes the error message.
    """
    if not isinstance(value, str):
        raise InvalidName(kind, value, f"expected a string, got {type(value).__name__}")
    if not NAME_RE.fullmatch(value):
        raise InvalidName(kind, value)
    return value


def unit_name(value: object) -> str:
    """A validated, full systemd unit name: `sums` becomes `sums.service`."""
    name = validate_name("unit", value)
    if name.endswith("@") or name.endswith("."):
        raise InvalidName("unit", value, "a unit name cannot end with '@' or '.'")
    if not name.endswith(UNIT_SUFFIXES):
        name += ".service"
    if "@." in name:
        raise InvalidName("unit", value, "a template unit needs an instance (name@instance)")
    return name


def _units(units: Iterable[str]) -> list[str]:
    return [unit_name(u) for u in units]


def systemctl(action: str, unit: str) -> str:
    """`systemctl <action> -- <unit>` for one of SYSTEMCTL_ACTIONS."""
    if action not in SYSTEMCTL_ACTIONS:
        raise ValueError(f"unknown systemctl action {action!r}")
    return f"systemctl {action} -- {quote(unit_name(unit))}"


def systemctl_status(unit: str, *, lines: int = 20) -> str:
    """`systemctl status` text; its exit codes 1-3 (not running) are mapped to 0.

    systemctl status answers 3 for an inactive unit, which is a perfectly good answer to
    "what is the status"; only 4 (no such unit) and worse make the operation fail.
    """
    n = _bounded_lines(lines)
    return (
        f"systemctl status --no-pager --full --lines={n} -- {quote(unit_name(unit))}; "
        'rc=$?; if [ "$rc" -le 3 ]; then exit 0; fi; exit "$rc"'
    )


def journal_tail(unit: str, lines: int = 200) -> str:
    """The last `lines` journal lines of a unit (1 ≤ lines ≤ MAX_LOG_LINES)."""
    n = _bounded_lines(lines)
    return f"journalctl --no-pager -o short-iso -n {n} -u {quote(unit_name(unit))}"


def _bounded_lines(lines: object) -> int:
    if isinstance(lines, bool) or not isinstance(lines, int):
        raise ValueError(f"line count must be an integer, got {lines!r}")
    if not 1 <= lines <= MAX_LOG_LINES:
        raise ValueError(f"line count must be between 1 and {MAX_LOG_LINES}, got {lines}")
    return lines


def systemctl_show(units: Iterable[str], properties: Iterable[str]) -> str:
    """`systemctl show -p A,B -- u1 u2 …`; never called with no units (that shows PID 1)."""
    names = _units(units)
    if not names:
        raise ValueError("systemctl show needs at least one unit")
    props = list(properties)
    for p in props:
        if not re.fullmatch(r"[A-Za-z]+", p):
            raise ValueError(f"bad systemd property name {p!r}")
    return f"systemctl show -p {','.join(props)} -- {join(names)}"


def _fail(code: int, message: str) -> str:
    return f"{{ echo {quote('kernel: ' + message)} >&2; exit {code}; }}"


def unit_known_check(unit: str) -> str:
    """Exit EXIT_UNIT_UNKNOWN with a message unless systemd has the unit loaded.

    The seed's rule is "after deploy, `systemctl status <name>` must show the unit"; we ask
    for LoadState=loaded, which is the same thing without parsing human text (not-found,
    masked, bad-setting and error all fail).
    """
    u = unit_name(unit)
    q = quote(u)
    no_systemctl = _fail(EXIT_UNIT_UNKNOWN, "systemctl not found, cannot check the unit")
    return (
        f"command -v systemctl >/dev/null 2>&1 || {no_systemctl}; "
        f"state=$(systemctl show -p LoadState --value -- {q} 2>&1); "
        f'if [ "$state" != loaded ]; then '
        f'echo "kernel: deploy script exited 0 but systemd does not know {u} '
        f'(LoadState=$state)" >&2; exit {EXIT_UNIT_UNKNOWN}; fi; '
        f"echo {quote(f'kernel: systemd knows {u}')}"
    )


def unit_gone_check(unit: str) -> str:
    """Exit EXIT_UNIT_NOT_GONE unless the unit file is gone and the unit is not running."""
    u = unit_name(unit)
    q = quote(u)
    return (
        "command -v systemctl >/dev/null 2>&1 || exit 0; "
        f"load=$(systemctl show -p LoadState --value -- {q} 2>&1); "
        f"active=$(systemctl show -p ActiveState --value -- {q} 2>&1); "
        'if [ "$load" != not-found ] || [ "$active" = active ]; then '
        f'echo "kernel: remove script exited 0 but systemd still has {u} '
        f'(LoadState=$load, ActiveState=$active)" >&2; exit {EXIT_UNIT_NOT_GONE}; fi; '
        f"echo {quote(f'kernel: {u} is gone')}"
    )


def run_stdin_script(then: str | None = None) -> str:
    """Run the script on stdin with `bash -s`; if it exits 0 and `then` is given, run that.

    The script's own exit code is passed through unchanged when it fails.
    """
    if then is None:
        return "bash -s"
    return f'bash -s; rc=$?; if [ "$rc" -ne 0 ]; then exit "$rc"; fi; {then}'

"""Every shell line Kernel sends to an agent is built here, from validated names and paths.

Names (services, units, init scripts, artifact path parts) are checked against one pattern,
and paths on servers against one rule (kernel.names), before they get anywhere near a shell,
and even then they are passed through `shlex.quote`.
Nothing outside this module pastes strings into shell lines: other modules call the builders
below and wrap the result in a `RemoteCommand`.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from kernel.exceptions import InvalidInput, InvalidName
from kernel.names import (
    MODE_RE,
    MODE_RULE,
    NAME_RE,
    OWNER_RE,
    OWNER_RULE,
    REMOTE_PATH_RULE,
    remote_path_problem,
)

__all__ = [
    "EXIT_FETCH_NOT_A_FILE",
    "EXIT_FETCH_NO_FILE",
    "EXIT_FETCH_TOO_LARGE",
    "EXIT_PUSH_DOWNLOAD",
    "EXIT_PUSH_INSTALL",
    "EXIT_PUSH_NO_DIRECTORY",
    "EXIT_UNIT_NOT_GONE",
    "EXIT_UNIT_UNKNOWN",
    "MAX_LOG_LINES",
    "SYSTEMCTL_ACTIONS",
    "InvalidName",
    "RemoteCommand",
    "file_fetch",
    "file_mode",
    "file_owner",
    "file_push",
    "join",
    "journal_tail",
    "quote",
    "remote_path",
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
# File pushes and fetches (docs/files.md): each failure its own code, with a `kernel: …` line.
EXIT_PUSH_NO_DIRECTORY = 96  # the file's directory does not exist on the host (or dest is one)
EXIT_PUSH_DOWNLOAD = 95  # the download failed, or what arrived has the wrong SHA-256
EXIT_PUSH_INSTALL = 94  # chown, chmod or the final rename failed
EXIT_FETCH_NO_FILE = 92  # no such file (or not readable)
EXIT_FETCH_NOT_A_FILE = 91  # a directory, a device, …
EXIT_FETCH_TOO_LARGE = 90  # larger than the fetch cap

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


# -- files on servers -----------------------------------------------------------------------


def remote_path(value: object, what: str = "path") -> str:
    """``value`` if it may be used as a path on a server (kernel.names), else InvalidInput."""
    problem = remote_path_problem(value)
    if problem is not None:
        shown = repr(value)[:100] if isinstance(value, str) else type(value).__name__
        raise InvalidInput(f"{what} {shown} {problem} ({REMOTE_PATH_RULE})")
    assert isinstance(value, str)
    return value


def file_mode(value: object) -> str:
    """An octal mode as four digits ("644" → "0644"), else InvalidInput."""
    if not isinstance(value, str) or not MODE_RE.fullmatch(value):
        raise InvalidInput(f"mode {str(value)[:20]!r} {MODE_RULE}")
    return value.rjust(4, "0")


def file_owner(value: object) -> str:
    """USER or USER:GROUP as chown takes it, else InvalidInput."""
    if not isinstance(value, str) or not OWNER_RE.fullmatch(value):
        raise InvalidInput(f"owner {str(value)[:80]!r} {OWNER_RULE}")
    return value


# Fetch with curl, else wget, else python3 (always there: the agent runs on it).
_DOWNLOAD = (
    "if command -v curl >/dev/null 2>&1; then "
    'curl -fsS --retry 2 -o "$tmp" -- "$KERNEL_FILE_URL"; '
    "elif command -v wget >/dev/null 2>&1; then "
    'wget -q -O "$tmp" -- "$KERNEL_FILE_URL"; '
    "else python3 -c 'import sys, urllib.request; "
    "urllib.request.urlretrieve(sys.argv[1], sys.argv[2])' "
    '"$KERNEL_FILE_URL" "$tmp"; fi'
)


def file_push(
    path: str, *, sha256: str, size: int, mode: str = "0644", owner: str | None = None
) -> str:
    """Write the file at ``$KERNEL_FILE_URL`` (an env variable: the signed URL is not shown
    with the job) to ``path`` atomically: downloaded to a hidden temporary file in the same
    directory, its SHA-256 checked, chown/chmod applied, then renamed over ``path`` — so
    ``path`` is the old file or the whole new one, never a part. A missing directory, a bad
    download and a failed install step exit EXIT_PUSH_* with a ``kernel: …`` line; the
    temporary file is removed whatever happens (also on cancel)."""
    dest = remote_path(path)
    mode = file_mode(mode)
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError(f"sha256 must be 64 lower-case hex digits, not {sha256!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ValueError(f"size must be a whole number of bytes, not {size!r}")
    directory = dest.rsplit("/", 1)[0] or "/"
    chown = ""
    if owner is not None:
        chown = (
            f'chown -- {quote(file_owner(owner))} "$tmp" || '
            f"{_fail(EXIT_PUSH_INSTALL, f'cannot chown {dest} to {owner}')}; "
        )
    return (
        f"dest={quote(dest)}; dir={quote(directory)}; want={sha256}; "
        'if [ ! -d "$dir" ]; then '
        f"{_fail(EXIT_PUSH_NO_DIRECTORY, f'directory {directory} does not exist on this host')}; "
        "fi; "
        'if [ -d "$dest" ]; then '
        f"{_fail(EXIT_PUSH_NO_DIRECTORY, f'{dest} is a directory on this host')}; fi; "
        'tmp=$(mktemp "$dir/.kernel-push-XXXXXXXX") || '
        f"{_fail(EXIT_PUSH_INSTALL, f'cannot create a temporary file in {directory}')}; "
        # The EXIT trap removes a temporary file left by any failure; a signal (cancel)
        # exits through it too.
        """trap 'rm -f -- "$tmp"' EXIT; trap 'exit 143' TERM; trap 'exit 130' INT; """
        "trap 'exit 129' HUP; "
        f"{{ {_DOWNLOAD}; }} || {_fail(EXIT_PUSH_DOWNLOAD, 'the download from Kernel failed')}; "
        """got=$(sha256sum -- "$tmp" | cut -d ' ' -f 1); """
        'if [ "$got" != "$want" ]; then '
        'echo "kernel: the download has SHA-256 $got, not $want" >&2; '
        f"exit {EXIT_PUSH_DOWNLOAD}; fi; "
        f"{chown}"
        f'chmod -- {mode} "$tmp" || {_fail(EXIT_PUSH_INSTALL, f"cannot chmod {dest}")}; '
        # On disk before it takes the name (a power cut leaves the old file or the new one).
        'sync -- "$tmp" 2>/dev/null || :; '
        'mv -f -T -- "$tmp" "$dest" || '
        f"{_fail(EXIT_PUSH_INSTALL, f'cannot rename the new file to {dest}')}; "
        "trap - EXIT; "
        f"echo {quote(f'kernel: wrote {dest} ({size} bytes, sha256 {sha256}, mode {mode}')}"
        f'"$(stat -c ", owner %U:%G" -- "$dest" 2>/dev/null))"'
    )


def file_fetch(path: str, cap: int) -> str:
    """Print a file's size on the first line and its bytes as base64 on the second (the
    agent's output is text). A missing, unreadable or special file and one larger than
    ``cap`` bytes exit EXIT_FETCH_* with a ``kernel: …`` line; at most ``cap + 1`` bytes are
    ever read, so a file that grows meanwhile is still caught (by the server)."""
    p = remote_path(path)
    if isinstance(cap, bool) or not isinstance(cap, int) or cap < 0:
        raise ValueError(f"cap must be a whole number of bytes, not {cap!r}")
    return (
        f"p={quote(p)}; "
        'if [ ! -e "$p" ]; then '
        f"{_fail(EXIT_FETCH_NO_FILE, f'no such file on this host: {p}')}; fi; "
        'if [ ! -f "$p" ]; then '
        f"{_fail(EXIT_FETCH_NOT_A_FILE, f'not a regular file: {p}')}; fi; "
        'if [ ! -r "$p" ]; then '
        f"{_fail(EXIT_FETCH_NO_FILE, f'cannot read {p}')}; fi; "
        'size=$(stat -L -c %s -- "$p") || '
        f"{_fail(EXIT_FETCH_NO_FILE, f'cannot stat {p}')}; "
        f'if [ "$size" -gt {cap} ]; then '
        f'echo "kernel: {_dq(p)} is $size bytes, more than the cap of {cap} bytes" >&2; '
        f"exit {EXIT_FETCH_TOO_LARGE}; fi; "
        'echo "$size"; '
        f'head -c {cap + 1} -- "$p" | base64 -w 0'
    )


def _dq(text: str) -> str:
    """``text`` inside a double-quoted shell string: nothing in it is expanded."""
    return "".join("\\" + c if c in '\\"$`' else c for c in text)

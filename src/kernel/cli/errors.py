"""The CLI's errors and exit statuses (the table in docs/cli.md is written from these).

    CliError (kernel.exceptions.KernelError)  exit 1, "kernel: <message>"
    ├── UsageError           2  bad arguments (also non-UTF-8 text that must reach the server)
    ├── ApiError             1  the server answered with an error (4xx): .status, .slug
    │   └── AuthError        5  401 or 403: not logged in, token refused, role too low
    └── ServerUnreachable    6  no usable answer: refused, timeout, TLS, 5xx, not Kernel

A command that runs a job ends with FAILED or UNREACHABLE when a host did not succeed
(`exit_status` picks one from the runs' states); Ctrl-C ends with INTERRUPTED.
"""

from __future__ import annotations

from collections.abc import Iterable

from kernel.exceptions import KernelError

OK = 0
ERROR = 1
USAGE = 2
UNREACHABLE = 3
FAILED = 4
AUTH = 5
SERVER_DOWN = 6
INTERRUPTED = 130

EXIT_CODES = {
    OK: "success: every host's run ended ok (or the command had nothing to run)",
    ERROR: "the server refused the request (not found, conflict, invalid input), or another error",
    USAGE: "bad arguments, or text that is not valid UTF-8 where the server needs text",
    UNREACHABLE: "at least one host was unreachable, or its run was lost",
    FAILED: "at least one host's run failed: non-zero exit, signal, timed out, cancelled",
    AUTH: "not logged in, the token was refused (401), or your role may not do this (403)",
    SERVER_DOWN: "the Kernel server could not be reached, or answered with a server error",
    INTERRUPTED: "interrupted (Ctrl-C); the message says what became of the job",
    143: "terminated (SIGTERM), as Ctrl-C; 129 for SIGHUP",
}

FAILED_STATES = frozenset({"failed", "timed_out", "cancelled"})
UNREACHABLE_STATES = frozenset({"unreachable", "lost"})


class CliError(KernelError):
    exit_code = ERROR

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(CliError):
    exit_code = USAGE


class ApiError(CliError):
    """An error answer ``{"error": slug, "message": text}`` with its HTTP status."""

    def __init__(self, status: int, slug: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.slug = slug


class AuthError(ApiError):
    exit_code = AUTH


class ServerUnreachable(CliError):
    exit_code = SERVER_DOWN


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP, handled as Ctrl-C is (so a CI step's timeout cancels the job)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


SIGNAL_WORDS = {1: "hung up", 2: "interrupted", 15: "terminated"}


def interruption(exc: BaseException) -> tuple[str, int]:
    """("interrupted", 130) for Ctrl-C; ("terminated", 143) for SIGTERM, …"""
    signum = exc.signum if isinstance(exc, Interrupted) else 2
    return SIGNAL_WORDS.get(signum, "interrupted"), 128 + signum


def exit_status(states: Iterable[str]) -> int:
    """UNREACHABLE if any run was unreachable or lost, else FAILED if any did not succeed."""
    seen = set(states)
    if seen & UNREACHABLE_STATES:
        return UNREACHABLE
    if seen & FAILED_STATES:
        return FAILED
    return OK

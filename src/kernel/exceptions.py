"""Kernel's exceptions: one tree of domain errors, raised by any layer, each saying what went
wrong in the caller's terms. Only the web layer knows HTTP: web/errors.py maps each kind to a
status and a slug, in one table.

    KernelError
    ├── ConfigError           a setting, the data dir or the database cannot be used
    ├── InvalidInput          input that breaks a rule (also a ValueError)
    │   ├── InvalidName       a name that may not be used: reported, never interpolated
    │   └── OperationRefused  an operation that cannot be built (broken service, bad unit)
    ├── NotAuthenticated      no credentials, or wrong ones
    ├── NotAllowed            authenticated, but not allowed (role too low, bad token)
    ├── NotFound              no such thing (also a LookupError)
    ├── Conflict              the state says no: duplicate name, already used, busy
    ├── Expired               it existed, but its time is up (an enrollment token)
    ├── TooLarge              more bytes than a cap allows (an upload, a fetched file)
    ├── RateLimited           too many attempts; ``retry_after`` seconds
    ├── StorageFull           the disk or database refused a write for lack of space
    ├── AgentError            talking to an agent failed (``code``, ``error``, ``msg``)
    │   ├── AgentRefused      it answered with an error (code = its HTTP status)
    │   └── AgentUnreachable  no usable answer: connect/read failure, timeout, TLS pin
    ├── AgentFailed           an agent did not answer a check properly (what a view reports)
    ├── TestbedError          a test host could not be made, reached or removed
    └── CliError              the `kernel` command's own (kernel/cli/errors.py: exit codes)

Every error may carry ``extra`` fields that travel with it to the client (``retry_after``,
``busy``). The agent (agent.py) is a standalone stdlib file and does not import this module.
"""

from __future__ import annotations

# This module is on the CLI's start-up path: it imports nothing at run time (not even typing).


class KernelError(Exception):
    """Root of every error Kernel raises on purpose."""

    def __init__(self, message: str = "", **extra: object) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra


class ConfigError(KernelError):
    """A setting has the wrong type or value, or the data dir or database cannot be used."""


class InvalidInput(KernelError, ValueError):
    """Input that breaks a rule; the message names the field and the rule."""


class InvalidName(InvalidInput):
    """A name that may not be used: it is reported, never interpolated."""

    def __init__(self, kind: str, value: object, reason: str | None = None) -> None:
        self.kind = kind
        self.value = value
        if reason is None:
            from kernel.names import NAME_PATTERN  # only when one is refused

            reason = f"names must match {NAME_PATTERN}"
        self.reason = reason
        super().__init__(f"{kind} name {_show(value)} is not allowed: {self.reason}")


def _show(value: object) -> str:
    # repr() keeps control characters and odd whitespace visible in messages and logs.
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class OperationRefused(InvalidInput):
    """The operation cannot be built for this service (unknown op, broken service, …)."""


class NotAuthenticated(KernelError):
    """No credentials, or wrong ones."""


class NotAllowed(KernelError):
    """The caller is known but may not do this."""


class NotFound(KernelError, LookupError):
    """No such thing."""


class Conflict(KernelError):
    """The current state refuses the request (a duplicate, a used token, a busy service)."""


class Expired(KernelError):
    """The thing existed but its time is up."""


class TooLarge(KernelError):
    """More bytes than a cap allows: an upload, a file fetched from a server."""


class RateLimited(KernelError):
    """Too many attempts; ``extra["retry_after"]`` says when to try again."""


class StorageFull(KernelError):
    """A write was refused for lack of space."""


class AgentError(KernelError):
    """Talking to an agent failed. ``code`` is the HTTP status it answered (0 when there was no
    answer), ``error`` the slug, ``msg`` the text."""

    def __init__(self, code: int, error: str, msg: str) -> None:
        super().__init__(f"{code} {error}: {msg}" if code else f"{error}: {msg}")
        self.code = code
        self.error = error
        self.msg = msg


class AgentRefused(AgentError):
    """The agent answered with a JSON error ``{"code", "error", "msg"}``."""


class AgentUnreachable(AgentError):
    """No usable answer: connect or read failure, timeout, TLS fingerprint mismatch."""

    def __init__(self, msg: str, error: str = "unreachable") -> None:
        super().__init__(0, error, msg)


class AgentFailed(KernelError):
    """An agent did not answer a check (environment check, enrollment) properly."""


class TestbedError(KernelError):
    """A test host could not be created, reached or torn down."""

    __test__ = False  # not a pytest test class

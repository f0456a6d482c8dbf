"""Kernel's exceptions: one root, one class per area.

    KernelError
    ├── AgentError            an agent answered with a JSON error (code, error, msg)
    │   └── AgentUnreachable  no answer: connect/read failure, timeout, TLS pin mismatch
    ├── TestbedError          a test host could not be made, reached or removed
    └── ServerError           server-side failures (subclassed by the server's areas)

The agent itself (agent.py) is a standalone stdlib file and does not import this module.
"""


class KernelError(Exception):
    """Root of every error Kernel raises on purpose."""


class AgentError(KernelError):
    """An agent answered with a JSON error ``{"code", "error", "msg"}``.

    ``code`` is the HTTP status (0 when there was no answer at all), ``error`` the slug.
    """

    def __init__(self, code: int, error: str, msg: str) -> None:
        super().__init__(f"{code} {error}: {msg}" if code else f"{error}: {msg}")
        self.code = code
        self.error = error
        self.msg = msg


class AgentUnreachable(AgentError):
    """No usable answer: connect or read failure, timeout, TLS fingerprint mismatch."""

    def __init__(self, msg: str, error: str = "unreachable") -> None:
        super().__init__(0, error, msg)


class TestbedError(KernelError):
    """A test host could not be created, reached or torn down."""

    __test__ = False  # not a pytest test class


class ServerError(KernelError):
    """Root of the server's own errors."""

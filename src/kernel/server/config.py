"""Configuration: defaults here, then ``<data dir>/kernel.cfg``, then ``KERNEL_*`` variables.

Every setting is documented in docs/server.md (a test checks that).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from kernel.exceptions import ServerError


class ConfigError(ServerError):
    """A setting has the wrong type or value, or the database cannot be opened."""


DEFAULTS: dict[str, Any] = {
    "DATA_DIR": "./kernel-data",  # SQLite database, init/, service/, secret key
    "DATABASE_URL": None,  # e.g. postgresql+psycopg://user@host/db; default SQLite in DATA_DIR
    "URL": None,  # public base URL, e.g. https://kernel.example.org; default: from the request
    "LISTEN": "0.0.0.0:8002",
    "THREADS": 128,  # worker threads: each request in progress and each live event stream
    "BACKLOG": 2048,  # listen backlog: a burst of connections waits here, never reset
    "CONNECTION_LIMIT": 1000,  # open connections at once (idle ones hold no thread)
    "IDLE_TIMEOUT": 120,  # seconds before a connection with no request in progress is closed
    "TRUSTED_PROXY": None,  # reverse proxy's IP (or *) whose X-Forwarded-* headers count
    "SECRET_KEY": None,  # default: generated once into DATA_DIR/secret_key
    "ENROLL_TOKEN_TTL": 3600,  # seconds an enrollment token stays valid
    "JOB_CONCURRENCY": 128,  # runs in flight at once
    "OUTPUT_CAP": 1048576,  # bytes of stdout (and of stderr) kept per run
    "RUN_START_TIMEOUT": 10.0,  # seconds for an agent to accept a run before it is unreachable
    "AGENT_CONNECT_TIMEOUT": 5.0,
    "AGENT_NETWORKS": None,  # comma-separated CIDRs agent URLs must be in (IP literals only)
    "AGENT_ALLOW_IPS": None,  # allow_ips written into enrolled agents; default: server's IP
    "SSE_KEEPALIVE": 15.0,  # seconds between keep-alive comments on idle event streams
    "SSE_MAX_STREAMS": None,  # event streams open at once (then 429); default THREADS // 2
    "LOGIN_MAX_FAILURES": 5,  # failed logins per user+address within LOGIN_WINDOW …
    "LOGIN_WINDOW": 300,  # … after which that pair gets 429 until the window has passed
    "LOCAL_AGENT": False,  # supervise a local agent on LOCAL_AGENT_LISTEN and enroll it
    "LOCAL_AGENT_LISTEN": "127.0.0.1:8001",
    "LOCAL_AGENT_NAME": None,  # default: this machine's hostname
    "LOCAL_AGENT_INIT": False,  # run the init scripts on the local machine when it is enrolled
    "SESSION_COOKIE_HTTPONLY": True,
    "SESSION_COOKIE_SAMESITE": "Lax",
    "SESSION_COOKIE_NAME": "kernel_session",
    "WTF_CSRF_CHECK_DEFAULT": False,  # checked by the role decorator for cookie sessions
    "WTF_CSRF_TIME_LIMIT": None,  # tokens live as long as the session
    "MAX_CONTENT_LENGTH": 16 * 1024 * 1024,
}

CONFIG_FILE = "kernel.cfg"
# Settings whose default is None but which must be a positive whole number when given.
OPTIONAL_COUNTS = ("SSE_MAX_STREAMS",)


def check(config: Any) -> None:
    """Refuse settings of the wrong kind at start-up, with the name an operator sets.

    Values from ``KERNEL_*`` arrive JSON-parsed (``64`` → int, ``true`` → bool), so a typo such
    as ``KERNEL_THREADS=abc`` is a string here and is caught before anything starts.
    """
    for name, default in DEFAULTS.items():
        value = config.get(name)
        if isinstance(default, bool):
            ok = isinstance(value, bool)
            kind = "true or false"
        elif isinstance(default, int) or name in OPTIONAL_COUNTS:
            ok = _positive(value, int) or (default is None and value is None)
            kind = "a positive whole number"
        elif isinstance(default, float):
            ok = _positive(value, int | float)
            kind = "a positive number"
        else:
            continue
        if not ok:
            raise ConfigError(f"setting {name} (KERNEL_{name}) must be {kind}, not {value!r}")


def _positive(value: Any, kind: Any) -> bool:
    """A number of ``kind`` above zero (a bool is not a number here)."""
    return isinstance(value, kind) and not isinstance(value, bool) and value > 0


def data_dir_from(overrides: dict[str, Any] | None) -> Path:
    raw = (overrides or {}).get("DATA_DIR") or os.environ.get("KERNEL_DATA_DIR") or "./kernel-data"
    return Path(raw).resolve()


def secret_key(data_dir: Path) -> str:
    """The session-signing key, made once per data dir so restarts keep users logged in."""
    path = data_dir / "secret_key"
    if path.exists():
        return path.read_text().strip()
    key = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    return key


def public_url(config: Any, request_root: str | None = None) -> str:
    """KERNEL_URL if set; else the URL the current request came in on; else loopback."""
    if config.get("URL"):
        return str(config["URL"]).rstrip("/")
    if request_root:
        return request_root.rstrip("/")
    _host, _, port = str(config.get("LISTEN", "")).rpartition(":")
    return f"http://127.0.0.1:{port or 8002}"

"""Every setting of the server, in one table: name, kind, default, and a line of doc.

Read one way: `create_app` loads the defaults here, then ``<data dir>/kernel.cfg``, then
``KERNEL_<NAME>`` environment variables (JSON-parsed by Flask, so ``64`` and ``true`` work),
then a test's mapping; `check` then refuses what has the wrong kind and turns the rest into
its kind (``"false"`` from a file → False), so every module reads ``config["NAME"]`` and gets
an int, a float, a bool or a string — never a second parser. docs/settings.md is this table
(a test compares them: `markdown()` writes it).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kernel.exceptions import ConfigError

CONFIG_FILE = "kernel.cfg"
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


@dataclass(frozen=True)
class Setting:
    name: str
    kind: str  # text | count | seconds | bool | auto (bool, or None: on unless TESTING)
    default: Any
    doc: str
    shown: str = ""  # the default as the docs say it, when the value alone says too little

    @property
    def env(self) -> str:
        return f"KERNEL_{self.name}"

    @property
    def default_text(self) -> str:
        if self.shown:
            return self.shown
        if self.default is None:
            return "unset"
        if isinstance(self.default, bool):
            return "true" if self.default else "false"
        return f"`{self.default}`"


S = Setting
SETTINGS: tuple[Setting, ...] = (
    # -- the server
    S("DATA_DIR", "text", "./kernel-data", "SQLite `kernel.db`, `service/`, `init/`, "
      "`secret_key`, `local-agent/`, `kernel.cfg`"),
    S("DATABASE_URL", "text", None, "e.g. `postgresql+psycopg://user@host/kernel`",
      shown="SQLite in `DATA_DIR`"),
    S("URL", "text", None, "public base URL (install one-liners, `KERNEL_URL` for scripts, "
      "artifact URLs) — set it in production", shown="from the request"),
    S("LISTEN", "text", "0.0.0.0:8002", "address to serve on"),
    S("THREADS", "count", 128, "worker threads: one per request in progress and per open "
      "event stream (idle and slow connections hold none)"),
    S("BACKLOG", "count", 2048, "listen backlog: a burst of connections waits here instead "
      "of being reset (capped by `net.core.somaxconn`)"),
    S("CONNECTION_LIMIT", "count", 1000, "open connections at once; beyond it new ones wait "
      "in the backlog (the open-file limit is raised to fit)"),
    S("IDLE_TIMEOUT", "count", 120, "seconds before a connection with no request in progress "
      "is closed (keep it above the proxy's upstream `keepalive_timeout`)"),
    S("TRUSTED_PROXY", "text", None, "IP address of the reverse proxy (or `*`) whose "
      "`X-Forwarded-For/-Proto/-Host/-Port` are believed; from anyone else they are dropped "
      "(docs/reverse-proxy.md)"),
    S("SECRET_KEY", "text", None, "signs session cookies",
      shown="generated into `DATA_DIR/secret_key`"),
    S("SEALING_KEY_FILE", "text", None, "the key that seals agent keys in the database (made "
      "once; keep it with backups, never in the database's)", shown="`DATA_DIR/sealing.key`"),
    S("MAX_CONTENT_LENGTH", "count", 16 * 1024 * 1024, "largest request body, in bytes"),
    S("INSTALL_EXAMPLES", "auto", None, "fill a new data dir with the example services and "
      "init scripts", shown="true (false under `TESTING`)"),
    S("REPLICA_HEARTBEAT", "seconds", 2.0, "seconds between a replica's heartbeats (several "
      "servers on one PostgreSQL)"),
    S("REPLICA_STALE", "seconds", 10.0, "seconds without a heartbeat after which a replica is "
      "gone: its runs are adopted, its share of the hosts probed by the others"),
    # -- users
    S("LOGIN_MAX_FAILURES", "count", 5, "failed logins per user and address within "
      "`LOGIN_WINDOW` before 429"),
    S("LOGIN_WINDOW", "count", 300, "seconds failed logins are counted"),
    # -- inventory
    S("ENROLL_TOKEN_TTL", "count", 3600, "seconds an enrollment token is valid"),
    S("AGENT_CONNECT_TIMEOUT", "seconds", 5.0, "connect timeout to agents (checks use twice "
      "this)"),
    S("AGENT_NETWORKS", "text", None, "comma-separated CIDRs agent URLs must be in (then IP "
      "literals only)"),
    S("TLS_PIN", "text", None, "`sha256//<base64>` (`;`-separated for several) of the public "
      "key the https install one-liner pins with curl `--pinnedpubkey`",
      shown="the key `URL` presents"),
    S("AGENT_ALLOW_IPS", "text", None, "`allow_ips` written into agents enrolled by "
      "one-liner", shown="the server's address"),
    S("LOCAL_AGENT", "bool", False, "supervise and enroll a local agent (`scripts/run` turns "
      "it on)"),
    S("LOCAL_AGENT_LISTEN", "text", "127.0.0.1:8001", "the local agent's address"),
    S("LOCAL_AGENT_NAME", "text", None, "the local agent's server name", shown="hostname"),
    S("LOCAL_AGENT_INIT", "bool", False, "run the init scripts on the local agent when it is "
      "enrolled"),
    # -- jobs
    S("JOB_CONCURRENCY", "count", 128, "runs in flight at once"),
    S("OUTPUT_CAP", "count", 1048576, "bytes of stdout and of stderr stored per run (then "
      "`truncated`)"),
    S("RUN_START_TIMEOUT", "seconds", 10.0, "seconds an agent has to start a run before it is "
      "`unreachable`"),
    S("SSE_KEEPALIVE", "seconds", 15.0, "seconds between keep-alive comments on idle event "
      "streams"),
    S("SSE_MAX_STREAMS", "count", None, "event streams open at once; more get 429",
      shown="`THREADS // 2`"),
    # -- services
    S("ARTIFACT_KEY", "text", None, "HMAC key for artifact URLs",
      shown="derived from `SECRET_KEY`"),
    S("ARTIFACT_TTL", "seconds", 3600.0, "seconds a `KERNEL_SERVICE_URL` (or a file push's "
      "download URL) stays valid; a deploy must fetch its files by then"),
    S("PUBLIC_ARTIFACTS", "bool", False, "also serve the seed's public "
      "`/static/service/<name>/<file>` and `/static/init/<file>` paths (no signature)"),
    # -- schedules
    S("SCHEDULE_GRACE", "seconds", 60.0, "seconds a firing may start late and still count "
      "as on time; a firing later than that was missed (the server was down), and the "
      "schedule's `missed` policy decides (docs/schedules.md)"),
    # -- files
    S("FILES_MAX_UPLOAD", "count", 1024**3, "largest file upload, in bytes; only "
      "`POST /api/v1/files` may send a body this large (spooled to disk), every other "
      "request stays under `MAX_CONTENT_LENGTH`", shown="`1073741824` (1 GiB)"),
    S("FILES_MAX_FETCH", "count", 4 * 1024**2, "largest file fetched from a server, in "
      "bytes (4 MiB; it comes back base64 through the agent's output, which the agent caps "
      "at 8 MiB)", shown="`4194304` (4 MiB)"),
    S("FILES_KEEP", "seconds", 86400.0, "seconds an uploaded file is kept for pushes "
      "(then deleted)"),
    # -- status
    S("STATUS_POLLER", "auto", None, "run the status poller alongside the job runner",
      shown="true (false under `TESTING`)"),
    S("STATUS_INTERVAL", "seconds", 30.0, "seconds between probes of one host"),
    S("STATUS_CONCURRENCY", "count", 64, "most probes in flight at once (the adaptive "
      "limit's ceiling)"),
    S("STATUS_PROBE_TIMEOUT", "seconds", 20.0, "upper bound of a probe's deadline (which is "
      "at most 0.4 interval)"),
    S("STATUS_OFFLINE_AFTER", "count", 2, "consecutive failed probes before a host is "
      "offline"),
    S("STATUS_PRUNE_INTERVAL", "seconds", 300.0, "seconds between history compactions"),
    S("STATUS_HISTORY_RAW", "seconds", 86400.0, "seconds every metrics sample is kept"),
    S("STATUS_HISTORY_KEEP", "seconds", 604800.0, "seconds downsampled metrics are kept"),
    S("STATUS_HISTORY_BUCKET", "seconds", 300.0, "seconds per downsampled metrics point"),
    S("DASHBOARD_PAGE", "count", 500, "servers per page of the console's dashboard (the "
      "filters and counts cover every server)"),
    # -- alerts
    S("ALERTS", "auto", None, "run the alert evaluator and sender alongside the job runner "
      "(docs/alerts.md)", shown="true (false under `TESTING`)"),
    S("ALERTS_INTERVAL", "seconds", 15.0, "seconds between evaluations of the alert rules "
      "(and deliveries of what they owe)"),
    S("ALERTS_SEND_TIMEOUT", "seconds", 15.0, "seconds one notification may take before it "
      "counts as failed"),
    S("ALERTS_SEND_ATTEMPTS", "count", 5, "attempts per notification before it is recorded "
      "as failed for good"),
    S("ALERTS_RETRY_AFTER", "seconds", 30.0, "seconds before the first retry of a failed "
      "notification (then doubling, at most an hour)"),
    S("ALERTS_KEEP", "seconds", 7776000.0, "seconds resolved alerts (and their notifications) "
      "are kept", shown="`7776000` (90 days)"),
)  # fmt: skip
BY_NAME = {s.name: s for s in SETTINGS}

# Flask's and Flask-WTF's own settings, set the way Kernel needs them (not user settings).
FLASK_DEFAULTS: dict[str, Any] = {
    "SESSION_COOKIE_HTTPONLY": True,
    "SESSION_COOKIE_SAMESITE": "Lax",
    "SESSION_COOKIE_NAME": "kernel_session",
    "WTF_CSRF_CHECK_DEFAULT": False,  # checked by the role decorator for cookie sessions
    "WTF_CSRF_TIME_LIMIT": None,  # tokens live as long as the session
}


def defaults() -> dict[str, Any]:
    return {**FLASK_DEFAULTS, **{s.name: s.default for s in SETTINGS}}


def check(config: MutableMapping[str, Any]) -> None:
    """Refuse settings of the wrong kind, naming the variable an operator sets, and store
    each as its kind. A typo such as ``KERNEL_THREADS=abc`` arrives as a string and is
    caught here, before anything starts."""
    for s in SETTINGS:
        config[s.name] = _coerce(s, config.get(s.name))


def _coerce(s: Setting, value: Any) -> Any:
    if value is None and (s.default is None or s.kind == "auto"):
        return None
    if s.kind in ("bool", "auto"):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise _wrong(s, "true or false", value)
    if s.kind == "count":
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
        raise _wrong(s, "a positive whole number", value)
    if s.kind == "seconds":
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise _wrong(s, "a positive number", value) from None
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            if value == value and value != float("inf"):
                return float(value)
        raise _wrong(s, "a positive number", value)
    if isinstance(value, str):
        return value
    raise _wrong(s, "text", value)


def _wrong(s: Setting, kind: str, value: Any) -> ConfigError:
    return ConfigError(f"setting {s.name} ({s.env}) must be {kind}, not {value!r}")


def flag(config: Mapping[str, Any], name: str) -> bool:
    """An "auto" setting: its value, or (unset) on — but off under TESTING."""
    value = config.get(name)
    if value is None:
        return not config.get("TESTING")
    return bool(value)


def data_dir_from(overrides: Mapping[str, Any] | None) -> Path:
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


def public_url(config: Mapping[str, Any], request_root: str | None = None) -> str:
    """URL if set; else the URL the current request came in on; else loopback."""
    if config.get("URL"):
        return str(config["URL"]).rstrip("/")
    if request_root:
        return request_root.rstrip("/")
    _host, _, port = str(config.get("LISTEN", "")).rpartition(":")
    return f"http://127.0.0.1:{port or 8002}"


def markdown() -> str:
    """docs/settings.md's table."""
    rows = ["| setting | default | meaning |", "|---|---|---|"]
    rows += [f"| `{s.name}` | {s.default_text} | {s.doc} |" for s in SETTINGS]
    return "\n".join(rows) + "\n"

#!/usr/bin/env python3
"""Kernel agent: runs commands for a Kernel server (protocol v2, see docs/agent.md).

One file, standard library only, Python 3.8+: copy it to a host and run ``python3 agent.py``.

Layout of this file, top to bottom:
  signing     sign(), signed_headers(), verify_signature(), NonceCache  (shared with the client)
  settings    Config, the config file and flags
  requests    pure validation of exec requests
  keeper      the process that owns the runs; it survives agent restarts
  runs        RunStore: the journal in the state dir, idempotency, results, re-attachment
  http        a small HTTP/1.1 server with deadlines, limits and JSON errors
  main        ``kernel-agent``, ``kernel-agent init``, ``kernel-agent check``
"""

from __future__ import annotations

import codecs
import collections
import errno
import json
import os
import re
import select
import signal
import socket
import sys
import threading
import time

# typing is only for the type checker: importing it would cost every host ~1 MB of memory.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Deque, Dict, Iterable, List, Optional, Tuple

# The HMAC is built on the interpreter's own SHA-256 rather than hashlib: importing hashlib
# maps OpenSSL and costs ~4 MB of resident memory on every host, for nothing.
try:
    from _sha256 import sha256 as _sha256  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # Python 3.12+
    try:
        from _sha2 import sha256 as _sha256  # type: ignore[import-not-found,no-redef,unused-ignore]
    except ImportError:  # pragma: no cover - exotic builds
        from hashlib import sha256 as _sha256  # type: ignore[assignment,no-redef,unused-ignore]
try:
    from _operator import _compare_digest as compare_digest
except ImportError:  # pragma: no cover
    from hmac import compare_digest  # type: ignore[no-redef,unused-ignore]

VERSION = "0.1.0"
PROTOCOL = 2
SIGNATURE_WINDOW = 300  # seconds a signed request stays valid (and its nonce remembered)
KILL_GRACE = 5.0  # seconds between SIGTERM and SIGKILL
DEFAULT_TIMEOUT = 600.0
MAX_TIMEOUT = 7 * 86400.0
LINGER = 1.0  # seconds to keep reading output that background children still write
DEFAULT_CONFIG = "/etc/kernel-agent/agent.conf"

# --------------------------------------------------------------------------------- signing

_PAD_OUTER = bytes(x ^ 0x5C for x in range(256))
_PAD_INNER = bytes(x ^ 0x36 for x in range(256))
_NONCE_RE = re.compile(r"\A[A-Za-z0-9_-]{16,64}\Z")
_KEY_RE = re.compile(r"\A[0-9a-fA-F]{64}\Z")
_SIGNATURE_RE = re.compile(r"\A[0-9a-fA-F]{64}\Z")
# str.isdigit() is true of "²" and "٣" too, which int() refuses: ASCII digits only.
_DIGITS_RE = re.compile(r"\A[0-9]+\Z")


def _hmac_sha256(key: bytes, msg: bytes) -> str:
    """HMAC-SHA256 (RFC 2104) as hex; equal to hmac.new(key, msg, sha256).hexdigest()."""
    if len(key) > 64:
        key = _sha256(key).digest()
    key = key.ljust(64, b"\0")
    inner = _sha256(key.translate(_PAD_INNER))
    inner.update(msg)
    outer = _sha256(key.translate(_PAD_OUTER))
    outer.update(inner.digest())
    return outer.hexdigest()


def sign(
    key: str, method: str, path_and_query: str, timestamp: int, nonce: str, body: bytes
) -> str:
    """The v2 request signature (ARCHITECTURE.md §2); ``key`` is the 64-hex-char string."""
    message = "%s\n%s\n%d\n%s\n%s" % (
        method,
        path_and_query,
        int(timestamp),
        nonce,
        _sha256(body).hexdigest(),
    )
    return _hmac_sha256(key.encode("utf-8"), message.encode("utf-8"))


def signed_headers(
    key: str,
    method: str,
    path_and_query: str,
    body: bytes,
    now: Optional[int] = None,
    nonce: Optional[str] = None,
) -> Dict[str, str]:
    """The three X-Kernel-* headers for one request."""
    timestamp = int(time.time()) if now is None else int(now)
    nonce = os.urandom(16).hex() if nonce is None else nonce
    return {
        "X-Kernel-Time": str(timestamp),
        "X-Kernel-Nonce": nonce,
        "X-Kernel-Signature": sign(key, method, path_and_query, timestamp, nonce, body),
    }


def verify_signature(
    key: str,
    method: str,
    path_and_query: str,
    headers: Dict[str, str],
    body: bytes,
    now: float,
    window: int = SIGNATURE_WINDOW,
) -> Tuple[Optional[str], int, str]:
    """Check headers (lower-case names) of a request: (error or None, timestamp, nonce).

    Pure: the caller still has to check that the nonce is fresh.
    """
    ts_text = headers.get("x-kernel-time", "")
    nonce = headers.get("x-kernel-nonce", "")
    signature = headers.get("x-kernel-signature", "")
    if not ts_text or not nonce or not signature:
        return "missing X-Kernel-Time, X-Kernel-Nonce or X-Kernel-Signature", 0, ""
    if not _DIGITS_RE.match(ts_text) or len(ts_text) > 12:
        return "X-Kernel-Time must be unix seconds", 0, ""
    if not _NONCE_RE.match(nonce):
        return "X-Kernel-Nonce must be 16-64 chars of [A-Za-z0-9_-]", 0, ""
    timestamp = int(ts_text)
    if abs(now - timestamp) > window:
        return "request time is more than %d s away from the agent's clock" % window, 0, ""
    signature = signature.strip()
    if not _SIGNATURE_RE.match(signature):
        return "bad signature", 0, ""
    expected = sign(key, method, path_and_query, timestamp, nonce, body)
    if not compare_digest(expected.encode("ascii"), signature.lower().encode("ascii")):
        return "bad signature", 0, ""
    return None, timestamp, nonce


class NonceCache:
    """Nonces seen inside the signature window, kept in memory and appended to a file.

    The file lets a restarted agent refuse replays too; it is rewritten with only the live
    entries when it has grown well past them.
    """

    def __init__(self, path: Optional[str], window: int = SIGNATURE_WINDOW, limit: int = 200000):
        self.path = path
        self.window = window
        self.limit = limit
        self._seen: Dict[str, int] = {}
        self._lock = threading.Lock()
        self._failing = False  # the last write failed (said once, not per request)
        self._lines = 0
        self.janitor: Any = None  # told when the new nonce expires (see Janitor)
        if path:
            self._load(path)

    def _append(self, line: bytes) -> None:
        # Opened for each line (~10 us) rather than held: a descriptor open for writing
        # would stop the state dir's filesystem from being remounted read-only under us.
        assert self.path is not None
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
        except OSError as e:
            self._failed(e)
            return
        self._failing = False
        self._lines += 1

    def _failed(self, e: OSError) -> None:
        # A state dir that cannot be written (full, read-only) must not stop signed requests:
        # nonces are then kept in memory only, which still refuses replays until a restart.
        if not self._failing:
            self._failing = True
            sys.stderr.write(
                "kernel-agent: cannot record nonces in %s (%s): kept in memory only\n"
                % (self.path, e.strerror)
            )

    def _load(self, path: str) -> None:
        now = time.time()
        try:
            with open(path, encoding="ascii", errors="replace") as f:
                for line in f:
                    parts = line.split()
                    if len(parts) == 2 and _DIGITS_RE.match(parts[0]) and len(parts[0]) < 13:
                        ts = int(parts[0])
                        if ts + self.window >= now:
                            self._seen[parts[1]] = ts
        except OSError:  # none yet, or unreadable: start empty
            pass
        self._lines = len(self._seen)

    def add(self, nonce: str, timestamp: int) -> Optional[str]:
        """Record a nonce; an error text if it was seen already or the cache is full."""
        with self._lock:
            if nonce in self._seen:
                return "nonce already used"
            if len(self._seen) >= self.limit:
                self._expire(time.time())
                if len(self._seen) >= self.limit:
                    return "too many requests inside the signature window"
            self._seen[nonce] = timestamp
            if self.path is not None:
                self._append(b"%d %s\n" % (timestamp, nonce.encode("ascii")))
        if self.janitor is not None:
            self.janitor.want(timestamp + self.window + 1)
        return None

    def remember(self, nonce: str, timestamp: int) -> None:
        """A nonce known from elsewhere (a run's journal), if still inside the window."""
        if timestamp + self.window >= time.time():
            with self._lock:
                self._seen.setdefault(nonce, timestamp)

    def close(self) -> None:
        pass  # nothing held open (see _append)

    def _expire(self, now: float) -> None:
        old = [n for n, ts in self._seen.items() if ts + self.window < now]
        for n in old:
            del self._seen[n]

    def oldest(self) -> Optional[int]:
        """About the oldest nonce's time (the first remembered), or None."""
        with self._lock:
            for ts in self._seen.values():
                return ts
        return None

    def compact(self) -> None:
        """Forget expired nonces; rewrite the file when it holds mostly dead lines."""
        with self._lock:
            self._expire(time.time())
            if self.path is None or self._lines < 2 * len(self._seen) + 1000:
                return
            tmp = self.path + ".tmp"
            try:
                with open(tmp, "w", encoding="ascii") as f:
                    for n, ts in self._seen.items():
                        f.write("%d %s\n" % (ts, n))
                os.replace(tmp, self.path)
            except OSError as e:
                _unlink(tmp)
                self._failed(e)
                return
            self._lines = len(self._seen)


# -------------------------------------------------------------------------------- settings


class ConfigError(Exception):
    """A setting is missing, malformed or unusable; the text says which and why."""


# name, kind, default, help. kind: str | int | bytes | list | bool | path
SETTINGS: List[Tuple[str, str, Any, str]] = [
    ("listen", "str", "0.0.0.0:8001", "address:port to listen on ([::]:8001 for IPv6)"),
    ("key_file", "path", "/etc/kernel-agent/agent.key", "file holding the 64-hex-char key"),
    ("state_dir", "path", "/var/lib/kernel-agent", "runs, their output and seen nonces"),
    ("allow_ips", "list", [], "only these addresses/CIDRs may connect (empty: any)"),
    ("legacy_allow_ips", "list", [], "addresses/CIDRs allowed to use /api/ExecCmd (empty: off)"),
    ("trusted_proxies", "list", [], "peers whose X-Forwarded-For is believed"),
    ("tls_cert", "path", "", "PEM certificate: serve HTTPS (with tls_key)"),
    ("tls_key", "path", "", "PEM private key for tls_cert"),
    ("max_concurrency", "int", 64, "running executions at once; more get 429"),
    ("max_output_bytes", "bytes", 8 << 20, "output kept per stream of a run (K/M/G suffixes)"),
    ("max_body_bytes", "bytes", 16 << 20, "largest request body; larger get 413"),
    ("max_connections", "int", 256, "open client connections at once (see docs/agent.md)"),
    (
        "max_unauthenticated_per_ip",
        "int",
        16,
        "requests one address may send at once before their signature is checked; more wait",
    ),
    ("request_timeout", "int", 30, "seconds a client may take to send a request or read a reply"),
    (
        "journal_fsync",
        "bool",
        True,
        "make a run's journal entry durable before it starts (docs/agent.md)",
    ),
    ("keep_finished_seconds", "int", 3600, "how long finished runs are kept"),
    ("keep_finished_count", "int", 1000, "how many finished runs are kept at most"),
    ("log_requests", "bool", False, "log one line per request"),
]
_SETTING_KINDS = {name: kind for name, kind, _, _ in SETTINGS}


class Config:
    """All settings; attribute names are the setting names."""

    listen: str
    key_file: str
    state_dir: str
    allow_ips: List[str]
    legacy_allow_ips: List[str]
    trusted_proxies: List[str]
    tls_cert: str
    tls_key: str
    max_concurrency: int
    max_output_bytes: int
    max_body_bytes: int
    max_connections: int
    max_unauthenticated_per_ip: int
    request_timeout: int
    journal_fsync: bool
    keep_finished_seconds: int
    keep_finished_count: int
    log_requests: bool

    def __init__(self, **values: Any) -> None:
        for name, _, default, _ in SETTINGS:
            setattr(self, name, list(default) if isinstance(default, list) else default)
        for name, value in values.items():
            self.set(name, value)

    def set(self, name: str, value: Any) -> None:
        kind = _SETTING_KINDS.get(name)
        if kind is None:
            raise ConfigError("unknown setting %r" % name)
        if isinstance(value, str):
            value = parse_setting(name, kind, value)
        setattr(self, name, value)

    def listen_address(self) -> Tuple[str, int]:
        return parse_listen(self.listen)


_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_setting(name: str, kind: str, text: str) -> Any:
    text = text.strip()
    if kind in ("str", "path"):
        return text
    if kind == "list":
        return [item.strip() for item in text.split(",") if item.strip()]
    if kind == "bool":
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off", ""):
            return False
        raise ConfigError("%s: expected true or false, got %r" % (name, text))
    m = re.match(r"\A(\d+)\s*([kKmMgG]?)(?:i?[bB])?\Z", text) if kind == "bytes" else None
    if m:
        return int(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]
    if _DIGITS_RE.match(text) and len(text) < 19:
        value = int(text)
        if value <= 0:
            raise ConfigError("%s: must be positive" % name)
        return value
    raise ConfigError("%s: expected a positive whole number, got %r" % (name, text))


def parse_listen(text: str) -> Tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not _DIGITS_RE.match(port) or len(port) > 5 or not int(port) < 65536:
        raise ConfigError("listen: expected HOST:PORT, got %r" % text)
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def read_config_file(path: str) -> Dict[str, str]:
    """``key = value`` lines, ``#`` comments, blank lines; unknown keys are errors."""
    values: Dict[str, str] = {}
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise ConfigError("cannot read config file %s: %s" % (path, e.strerror)) from None
    except UnicodeDecodeError:
        raise ConfigError("config file %s is not UTF-8 text" % path) from None
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        name = name.strip()
        if not sep or name not in _SETTING_KINDS:
            raise ConfigError(
                "%s:%d: expected 'setting = value' with a known setting, got %r"
                % (path, number, line)
            )
        values[name] = value.split(" #")[0].strip()
    return values


def read_key(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            key = f.read().strip()
    except OSError as e:
        raise ConfigError(
            "cannot read key file %s: %s (make one with: kernel-agent init --key-file %s)"
            % (path, e.strerror, path)
        ) from None
    except UnicodeDecodeError:
        key = ""
    if not _KEY_RE.match(key):
        raise ConfigError("key file %s must hold exactly 64 hex characters" % path)
    return key


def new_key() -> str:
    return os.urandom(32).hex()


def write_key(path: str, key: str) -> None:
    """Write a key file with mode 0600, atomically."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, ".%s.%d.tmp" % (os.path.basename(path), os.getpid()))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (key + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class AddressSet:
    """Addresses and networks from a list setting (``ipaddress`` is imported only if used)."""

    def __init__(self, items: Iterable[str], setting: str = "allow_ips"):
        import ipaddress

        self._ip = ipaddress
        self.networks = []
        for item in items:
            try:
                self.networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ConfigError("%s: %r is not an address or CIDR" % (setting, item)) from None

    def __contains__(self, address: str) -> bool:
        try:
            ip = self._ip.ip_address(address.split("%")[0])
        except ValueError:
            return False
        mapped = getattr(ip, "ipv4_mapped", None)
        if mapped is not None:
            ip = mapped
        return any(ip in net for net in self.networks)


# -------------------------------------------------------------------------------- requests


class HttpError(Exception):
    """An error answer: ``{"code": status, "error": slug, "msg": text}``."""

    def __init__(self, status: int, slug: str, msg: str, close: bool = False):
        Exception.__init__(self, msg)
        self.status = status
        self.slug = slug
        self.msg = msg
        self.close = close


_ID_RE = re.compile(r"\A[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}\Z")
_ENV_NAME_RE = re.compile(r"\A[A-Za-z_][A-Za-z0-9_]*\Z")


class ExecSpec:
    """A validated exec request."""

    __slots__ = ("cmd", "cwd", "env", "id", "stdin", "stream", "timeout")

    def __init__(
        self,
        cmd: str,
        stdin: str = "",
        env: Optional[Dict[str, str]] = None,
        cwd: Optional[str] = None,
        timeout: float = DEFAULT_TIMEOUT,
        id: Optional[str] = None,
        stream: bool = False,
    ):
        self.cmd = cmd
        self.stdin = stdin
        self.env = env or {}
        self.cwd = cwd
        self.timeout = timeout
        self.id = id
        self.stream = stream

    def fingerprint(self) -> str:
        """What makes two requests with the same id 'the same' (not timeout or stream)."""
        canonical = json.dumps([self.cmd, self.stdin, sorted(self.env.items()), self.cwd])
        return _sha256(canonical.encode("utf-8")).hexdigest()


def _bad(field: str, msg: str) -> HttpError:
    return HttpError(400, "bad_field", "%s: %s" % (field, msg))


def _text(field: str, value: str) -> str:
    """``value`` if it can be handed to a process: no NUL, and encodable as UTF-8 (JSON's
    ``\\ud800`` escapes decode to lone surrogates, which no OS interface accepts)."""
    if "\0" in value:
        raise _bad(field, "must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise _bad(
            field, "is not valid Unicode text (a lone surrogate at character %d)" % e.start
        ) from None
    return value


def json_bytes(data: Any) -> bytes:
    """JSON as UTF-8; text that cannot be encoded (a lone surrogate echoed from a request)
    goes out escaped instead of ending the answer with an exception."""
    try:
        return json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(data).encode("ascii")


def parse_json_body(body: bytes) -> Any:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise HttpError(400, "bad_json", "body is not UTF-8") from None
    try:
        return json.loads(text)
    except RecursionError:
        raise HttpError(400, "bad_json", "JSON nested too deeply") from None
    except ValueError as e:
        raise HttpError(400, "bad_json", "body is not valid JSON: %s" % e) from None


def parse_exec_request(data: Any) -> ExecSpec:
    """Validate a decoded exec body; raise HttpError(400) naming the bad field."""
    if not isinstance(data, dict):
        raise HttpError(400, "bad_field", "body must be a JSON object")
    cmd = data.get("cmd")
    if not isinstance(cmd, str) or not cmd.strip():
        raise _bad("cmd", "required, a non-empty string")
    stdin = data.get("stdin")
    if stdin is None:
        stdin = ""
    elif not isinstance(stdin, str):
        raise _bad("stdin", "must be a string")
    env = data.get("env")
    if env is None:
        env = {}
    elif not isinstance(env, dict):
        raise _bad("env", "must be an object of strings")
    for name, value in env.items():
        if not _ENV_NAME_RE.match(name):
            raise _bad("env", "%r is not a valid variable name" % name[:80])
        if not isinstance(value, str):
            raise _bad("env", "value of %s must be a string" % name)
        _text("env", value)
    cwd = data.get("cwd")
    if cwd is not None:
        if not isinstance(cwd, str) or not cwd.startswith("/"):
            raise _bad("cwd", "must be an absolute path")
        _text("cwd", cwd)
        if not os.path.isdir(cwd):
            raise _bad("cwd", "%s is not a directory on this host" % cwd[:200])
    timeout = data.get("timeout")
    if timeout is None:
        timeout = DEFAULT_TIMEOUT
    elif isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise _bad("timeout", "must be a number of seconds")
    elif not 0 < timeout <= MAX_TIMEOUT:
        raise _bad("timeout", "must be more than 0 and at most %d" % MAX_TIMEOUT)
    run_id = data.get("id")
    if run_id is not None and (not isinstance(run_id, str) or not _ID_RE.match(run_id)):
        raise _bad("id", "must be 1-128 chars of [A-Za-z0-9_.-], not starting with '.'")
    stream = data.get("stream", False)
    if not isinstance(stream, bool):
        raise _bad("stream", "must be true or false")
    return ExecSpec(
        _text("cmd", cmd), _text("stdin", stdin), env, cwd, float(timeout), run_id, stream
    )


# ---------------------------------------------------------------------------------- keeper
#
# The keeper is forked from the agent at start-up, before any thread exists. It starts every
# command (bash -c, its own session and process group), pumps its output into files of the
# run's directory (never past the cap), enforces the timeout, kills the whole group on
# timeout or cancel, reaps and writes status.json. It leaves its session, so it survives
# the agent: a restarted agent starts a fresh keeper and watches the old one's runs through
# their files. A keeper exits once its agent is gone and its runs are done.


def process_start_time(pid: int) -> Optional[str]:
    """Field 22 of /proc/PID/stat: tells a process from a later one with the same pid."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()
    if len(fields) < 20 or fields[0] in (b"Z", b"X"):  # a zombie has finished its work
        return None
    return fields[19].decode()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _KeeperRun:
    def __init__(self, msg: Dict[str, Any], now: float):
        self.id: str = msg["id"]
        self.base: str = msg["base"]  # runs/<id>: .run (journal), .stdout, .stderr, .cancel
        self.cap: int = msg["cap"]
        self.journal = -1  # fd of <base>.run, opened for appending
        self.files = {"stdout": -1, "stderr": -1}  # created at the first byte of output
        self.deadline = now + msg["timeout"]
        self.started_mono = now
        self.started_at: float = msg["started_at"]
        self.pid = 0
        self.status: Optional[int] = None  # raw waitpid status of the leader
        self.leader_gone_at = 0.0
        self.pipes: Dict[int, str] = {}  # read fd -> stream name
        self.written = {"stdout": 0, "stderr": 0}
        self.truncated = False
        self.stdin_fd = -1
        self.stdin_data = b""
        self.kill_stage = 0  # 0 none, 1 TERM sent, 2 KILL sent
        self.kill_at = 0.0
        self.timed_out = False
        self.cancelled = False
        self.error: Optional[str] = None
        self.output_error: Optional[str] = None


class Keeper:
    """The keeper's event loop (runs in the forked child only)."""

    def __init__(self, ctl: socket.socket, bash: str, env: Dict[str, str]):
        self.ctl = ctl
        self.bash = bash
        self.envb = {os.fsencode(k): os.fsencode(v) for k, v in env.items()}
        self.runs: Dict[str, _KeeperRun] = {}
        self.by_pid: Dict[int, _KeeperRun] = {}
        self.by_fd: Dict[int, _KeeperRun] = {}
        self.poller = select.poll()
        self.agent_gone = False
        self.ctl_buf = b""
        self.flags = {"cancel": False, "stop": False}

    def serve(self) -> None:
        os.setsid()
        self._set_subreaper()
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        os.set_blocking(wake_r, False)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)

        def on_cancel(signum: int, frame: Any) -> None:
            self.flags["cancel"] = True

        def on_stop(signum: int, frame: Any) -> None:
            self.flags["stop"] = True

        signal.signal(signal.SIGCHLD, lambda s, f: None)
        signal.signal(signal.SIGUSR1, on_cancel)
        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        self.poller.register(self.ctl.fileno(), select.POLLIN)
        self.poller.register(wake_r, select.POLLIN)
        ctl_fd = self.ctl.fileno()
        while True:
            if (self.agent_gone or self.flags["stop"]) and not self.runs:
                return
            timeout_ms = self._next_timer_ms()
            for fd, event in self.poller.poll(timeout_ms):
                if fd == ctl_fd:
                    self._read_control()
                elif fd == wake_r:
                    try:
                        while os.read(wake_r, 512):
                            pass
                    except BlockingIOError:
                        pass
                else:
                    run = self.by_fd.get(fd)
                    if run is not None:
                        if fd == run.stdin_fd:
                            self._feed_stdin(run, event)
                        else:
                            self._pump(run, fd)
            self._reap()
            if self.flags["cancel"] or self.flags["stop"]:
                self._scan_cancels()
            now = time.monotonic()
            for run in list(self.runs.values()):
                self._tick(run, now)

    @staticmethod
    def _set_subreaper() -> None:
        # Orphaned grandchildren then come to us and get reaped, instead of lingering as
        # zombies under a PID 1 that may not reap (containers).
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
        except Exception as e:  # noqa: BLE001 - best effort; only zombies are at stake
            os.write(2, ("kernel-agent keeper: no subreaper: %r\n" % (e,)).encode())

    def _next_timer_ms(self) -> int:
        """Until the next deadline of a run (-1: none). Output, exits (SIGCHLD), cancels and
        the agent all arrive as events, so a keeper whose runs are quiet sleeps."""
        if not self.runs:
            return -1
        now = time.monotonic()
        soonest = float("inf")
        for run in self.runs.values():
            if run.kill_stage:
                soonest = min(soonest, now + 0.05)
            elif run.status is None:
                soonest = min(soonest, run.deadline)
            if run.status is not None:
                soonest = min(soonest, run.leader_gone_at + LINGER, now + 0.05)
        return max(0, min(int((soonest - now) * 1000) + 1, 1 << 30))

    def _read_control(self) -> None:
        try:
            data = self.ctl.recv(1 << 20)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.agent_gone = True
            self.poller.unregister(self.ctl.fileno())
            return
        self.ctl_buf += data
        while b"\n" in self.ctl_buf:
            line, self.ctl_buf = self.ctl_buf.split(b"\n", 1)
            self._control(line)

    def _control(self, line: bytes) -> None:
        """One control message. Nothing in it may end the keeper: every run on this host
        depends on it, so a message it cannot carry out fails that one run only."""
        try:
            msg = json.loads(line)
        except ValueError as e:
            os.write(2, ("kernel-agent keeper: bad control line: %s\n" % e).encode())
            return
        if isinstance(msg, dict) and msg.get("op") == "cancel":
            run = self.runs.get(msg.get("id"))  # type: ignore[arg-type]
            if run is not None and run.kill_stage == 0:
                run.cancelled = True
                self._kill(run, signal.SIGTERM)
            return
        if not isinstance(msg, dict) or msg.get("op") != "spawn":
            return
        try:
            self._spawn(msg)
        except OSError as e:  # e.g. the state dir vanished or the disk is full
            self._fail(msg, "cannot start: %s" % e)
        except Exception as e:  # noqa: BLE001 - see the docstring
            self._fail(msg, "cannot start: %s" % (e,))

    def _fail(self, msg: Dict[str, Any], error: str) -> None:
        try:
            self._fail_run(msg, error)
        except Exception as e:  # noqa: BLE001 - a message too broken to answer: log it
            os.write(2, ("kernel-agent keeper: cannot fail run: %r\n" % (e,)).encode())

    def _fail_run(self, msg: Dict[str, Any], error: str) -> None:
        run = self.runs.get(msg["id"]) or _KeeperRun(msg, time.monotonic())
        self.runs[run.id] = run
        for fd in list(run.pipes):
            self._close_pipe(run, fd)
        run.error = error
        run.status = 127 << 8
        try:
            self._finish(run)
        except OSError:
            self.runs.pop(run.id, None)
            self._send({"op": "exit", "id": run.id, "status": {"exit_code": 127, "error": error}})

    def _send(self, msg: Dict[str, Any]) -> None:
        if self.agent_gone:
            return
        try:
            self.ctl.sendall(json.dumps(msg).encode("utf-8") + b"\n")
        except OSError:
            self.agent_gone = True

    def _spawn(self, msg: Dict[str, Any]) -> None:
        # Everything handed to the OS is bytes, made before a file is opened or a process
        # started: text that cannot be encoded fails here (ValueError), and nothing leaks.
        argv = [b"bash", b"-c", msg["cmd"].encode("utf-8")]
        env = self.envb
        if msg["env"]:
            env = dict(env)
            for name, value in msg["env"].items():
                env[name.encode("utf-8")] = value.encode("utf-8")
        cwd = (msg.get("cwd") or "/").encode("utf-8")
        stdin_data = msg.get("stdin", "").encode("utf-8")
        now = time.monotonic()
        run = _KeeperRun(msg, now)
        self.runs[run.id] = run
        # Few file-system operations per run: creating files is what costs on a real disk.
        run.journal = os.open(run.base + ".run", os.O_WRONLY | os.O_APPEND)
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            # The keeper is single-threaded, so changing its own directory around the spawn
            # is safe; between runs it sits in /.
            os.chdir(cwd)
            # posix_spawn (vfork) is several times cheaper than fork+exec of a Python child.
            # Signals the agent ignores (SIGPIPE, SIGXFSZ, ...) are reset for the command.
            run.pid = os.posix_spawn(
                self.bash,
                argv,
                env,
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, in_r, 0),
                    (os.POSIX_SPAWN_DUP2, out_w, 1),
                    (os.POSIX_SPAWN_DUP2, err_w, 2),
                ],
                setsid=True,
                setsigdef=(
                    signal.SIGPIPE,
                    signal.SIGXFSZ,
                    signal.SIGINT,
                    signal.SIGHUP,
                    signal.SIGTERM,
                    signal.SIGUSR1,
                    signal.SIGCHLD,
                    signal.SIGQUIT,
                ),
            )
        except OSError as e:
            run.error = "cannot start bash in %s: %s" % (msg.get("cwd") or "/", e)
        finally:
            os.chdir("/")
            os.close(in_r)
            os.close(out_w)
            os.close(err_w)
        if run.error is not None:
            for fd in (in_w, out_r, err_r):
                os.close(fd)
            self._output(run, "stderr", (run.error + "\n").encode())
            run.status = 127 << 8
            self._finish(run)
            return
        try:
            os.write(run.journal, b'{"pid": %d}\n' % run.pid)  # the command has started
        except OSError:  # full disk: the run goes on (a restarted agent will call it lost)
            pass
        self.by_pid[run.pid] = run
        for read_fd, name in ((out_r, "stdout"), (err_r, "stderr")):
            os.set_blocking(read_fd, False)
            run.pipes[read_fd] = name
            self.by_fd[read_fd] = run
            self.poller.register(read_fd, select.POLLIN)
        run.stdin_data = stdin_data
        if run.stdin_data:
            os.set_blocking(in_w, False)
            run.stdin_fd = in_w
            self.by_fd[in_w] = run
            self.poller.register(in_w, select.POLLOUT)
        else:
            os.close(in_w)

    def _feed_stdin(self, run: _KeeperRun, event: int) -> None:
        done = bool(event & (select.POLLERR | select.POLLHUP))
        if not done:
            try:
                n = os.write(run.stdin_fd, run.stdin_data[:65536])
                run.stdin_data = run.stdin_data[n:]
                done = not run.stdin_data
            except BlockingIOError:
                return
            except OSError:  # the command closed its stdin or exited
                done = True
        if done:
            self.poller.unregister(run.stdin_fd)
            del self.by_fd[run.stdin_fd]
            os.close(run.stdin_fd)
            run.stdin_fd = -1

    def _pump(self, run: _KeeperRun, fd: int) -> bool:
        """Move what is in the pipe to the file; False when there was nothing to read."""
        name = run.pipes[fd]
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if not data:
            self._close_pipe(run, fd)
            return False
        room = run.cap - run.written[name]
        if len(data) > room:
            run.truncated = True
            data = data[: max(room, 0)]
        if data:
            self._output(run, name, data)
        return True

    @staticmethod
    def _output(run: _KeeperRun, name: str, data: bytes) -> None:
        """Keep output in the run's file. A disk that is full (or gone read-only) loses the
        rest of that stream, marked truncated, and nothing else: the command runs on."""
        if run.files[name] == -2:  # this stream could not be kept
            run.truncated = True
            return
        try:
            if run.files[name] < 0:
                flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
                run.files[name] = os.open("%s.%s" % (run.base, name), flags, 0o600)
            n = os.write(run.files[name], data)
            run.written[name] += n
            if n == len(data):
                return
            error = os.strerror(errno.ENOSPC)
        except OSError as e:
            error = e.strerror or str(e)
        if run.files[name] >= 0:
            os.close(run.files[name])
        run.files[name] = -2
        run.truncated = True
        lost = "%s not kept past %d bytes: %s" % (name, run.written[name], error)
        run.output_error = run.output_error + "; " + lost if run.output_error else lost

    def _close_pipe(self, run: _KeeperRun, fd: int) -> None:
        del run.pipes[fd]
        self.poller.unregister(fd)
        del self.by_fd[fd]
        os.close(fd)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            run = self.by_pid.pop(pid, None)
            if run is not None:
                run.status = status
                run.leader_gone_at = time.monotonic()

    def _scan_cancels(self) -> None:
        stop = self.flags["stop"]
        self.flags["cancel"] = False
        for run in self.runs.values():
            if run.kill_stage == 0 and (stop or os.path.exists(run.base + ".cancel")):
                run.cancelled = True
                self._kill(run, signal.SIGTERM)

    def _kill(self, run: _KeeperRun, sig: int) -> None:
        if run.pid:
            try:
                os.killpg(run.pid, sig)
            except OSError:
                pass
        run.kill_stage = 1 if sig == signal.SIGTERM else 2
        run.kill_at = time.monotonic() + (KILL_GRACE if sig == signal.SIGTERM else 1.0)

    def _tick(self, run: _KeeperRun, now: float) -> None:
        if run.kill_stage == 0 and run.status is None and now >= run.deadline:
            run.timed_out = True
            self._kill(run, signal.SIGTERM)
        group_alive = run.kill_stage > 0 and _group_alive(run.pid)
        if run.kill_stage == 1 and group_alive and now >= run.kill_at:
            self._kill(run, signal.SIGKILL)
        if run.status is None:
            return
        if run.kill_stage and group_alive and now < run.kill_at:
            # A killed run ends when its whole group is gone (or a second after SIGKILL).
            return
        if run.pipes and now < run.leader_gone_at + LINGER:
            return
        for fd in list(run.pipes):
            for _ in range(64):  # drain what is buffered, without waiting for more
                if not self._pump(run, fd):
                    break
            if fd in run.pipes:
                self._close_pipe(run, fd)
        self._finish(run)

    def _finish(self, run: _KeeperRun) -> None:
        if run.stdin_fd >= 0:
            self.poller.unregister(run.stdin_fd)
            self.by_fd.pop(run.stdin_fd, None)
            os.close(run.stdin_fd)
        status = run.status or 0
        finished_at = time.time()
        result: Dict[str, Any] = {
            "exit_code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
            "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
            "timed_out": run.timed_out,
            "cancelled": run.cancelled,
            "truncated": run.truncated,
            "sizes": [run.written["stdout"], run.written["stderr"]],
            "started_at": run.started_at,
            "finished_at": round(finished_at, 6),
            "duration": round(time.monotonic() - run.started_mono, 6),
        }
        if run.error:
            result["error"] = run.error
        if run.output_error:
            result["output_error"] = run.output_error
        for fd in run.files.values():
            if fd >= 0:
                os.close(fd)
        try:
            # One appended line: a reader sees the whole status or none of it.
            os.write(run.journal, json.dumps({"status": result}).encode("utf-8") + b"\n")
        except OSError as e:  # full disk: the agent still learns it below (a restart: lost)
            os.write(2, ("kernel-agent keeper: %s: status not journalled: %s\n" % (
                run.id, e.strerror)).encode())  # fmt: skip
        finally:
            if run.journal >= 0:
                os.close(run.journal)
            run.journal = -1
        del self.runs[run.id]
        self._send({"op": "exit", "id": run.id, "status": result})


def start_keeper(bash: str, env: Dict[str, str]) -> Tuple[socket.socket, int]:
    """Fork the keeper; call before any thread starts. Returns (control socket, keeper pid)."""
    ours, theirs = socket.socketpair()
    pid = os.fork()
    if pid == 0:  # the keeper
        code = 0
        try:
            ours.close()
            null = os.open(os.devnull, os.O_RDWR)
            os.dup2(null, 0)
            os.dup2(null, 1)
            os.close(null)
            Keeper(theirs, bash, env).serve()
        except BaseException as e:  # noqa: BLE001 - the keeper must never return into main()
            try:
                os.write(2, ("kernel-agent keeper: %r\n" % (e,)).encode())
            except OSError:
                pass
            code = 70
        os._exit(code)
    theirs.close()
    return ours, pid


# ------------------------------------------------------------------------------------ runs


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def read_run_file(path: str) -> Tuple[Optional[Dict[str, Any]], bool, Optional[Dict[str, Any]]]:
    """A run's journal: (first line, whether the command started, final status or None).

    JSON lines: the agent writes the request's line before the command starts; the keeper
    appends ``{"pid": N}`` once it runs and ``{"status": {...}}`` when it has ended.
    """
    try:
        with open(path, "rb") as f:
            lines = f.read().splitlines()
    except OSError:
        return None, False, None
    entries = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:  # a torn last line: as if not yet written
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    if not entries or "id" not in entries[0]:
        return None, False, None
    status = None
    spawned = False
    for entry in entries[1:]:
        spawned = spawned or "pid" in entry
        if isinstance(entry.get("status"), dict):
            status = entry["status"]
    return entries[0], spawned, status


def _which(program: str) -> Optional[str]:
    for directory in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep):
        path = os.path.join(directory, program)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


_PERCENT_RE = re.compile(r"(?:%[0-9A-Fa-f]{2})+")


def parse_query(text: str) -> Dict[str, List[str]]:
    """``a=1&b=x+y%21`` -> {"a": ["1"], "b": ["x y!"]} (urllib.parse costs memory)."""
    out: Dict[str, List[str]] = {}
    for part in text.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        name, value = (
            _PERCENT_RE.sub(
                lambda m: bytes.fromhex(m.group(0).replace("%", "")).decode("utf-8", "replace"),
                x.replace("+", " "),
            )
            for x in (name, value)
        )
        out.setdefault(name, []).append(value)
    return out


_FINISHED = threading.Event()
_FINISHED.set()


class Run:
    """The agent's view of one execution; its files (``base`` + .run, .stdout, .stderr) are
    the truth."""

    __slots__ = ("base", "done", "fingerprint", "id", "keeper", "started_at", "state", "status",
                 "timeout")  # fmt: skip

    def __init__(
        self,
        run_id: str,
        base: str,
        fingerprint: str,
        timeout: float,
        started_at: float,
        keeper: Tuple[int, str],
    ):
        self.id = run_id
        self.base = base
        self.fingerprint = fingerprint
        self.timeout = timeout
        self.started_at = started_at
        self.keeper = keeper  # (pid, start time) of the keeper that owns it
        self.status: Optional[Dict[str, Any]] = None
        self.state = "running"
        self.done = threading.Event()

    def finish(self, status: Dict[str, Any], state: str = "finished") -> None:
        self.status = status
        self.state = state
        waiting, self.done = self.done, _FINISHED  # a thousand finished runs share one Event
        waiting.set()


def _read_capped(path: str, cap: int) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(cap)
    except OSError:
        return b""


def _pid_matches(pid: int, start: str) -> bool:
    return pid > 0 and process_start_time(pid) == start


class RunStore:
    """Runs by id: the journal on disk, idempotency, limits, results and clean-up."""

    def __init__(self, cfg: Config, bash: str):
        self.cfg = cfg
        self.bash = bash
        self.root = os.path.join(cfg.state_dir, "runs")
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        self.runs: Dict[str, Run] = {}
        self.lock = threading.Lock()
        self.running = 0
        self.keeper_sock: Optional[socket.socket] = None
        self.keeper: Tuple[int, str] = (0, "")
        self.send_lock = threading.Lock()
        # Durability of new journal entries in runs/ (see _make_durable).
        self.dir_fd = os.open(self.root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        self.dir_lock = threading.Lock()
        self.dir_created = 0  # journal files created so far (under self.lock)
        self.dir_synced = 0  # of which the directory entries are known durable
        self.journal_nonces: List[Tuple[int, str]] = []  # (time, nonce) of journalled runs
        self.janitor: Optional[Janitor] = None

    # start-up

    def attach_keeper(self, sock: socket.socket, pid: int) -> None:
        self.keeper_sock = sock
        self.keeper = (pid, process_start_time(pid) or "")
        threading.Thread(target=self._keeper_reader, name="keeper", daemon=True).start()

    def load(self) -> None:
        """Learn the runs a previous agent left in the state dir."""
        names = os.listdir(self.root)
        for name in names:
            run_id, _, suffix = name.rpartition(".")
            if suffix != "run":
                if run_id + ".run" not in names:  # output of a run that was pruned
                    _unlink(os.path.join(self.root, name))
                continue
            base = os.path.join(self.root, run_id)
            journal, _, status = read_run_file(base + ".run")
            if journal is None or not _ID_RE.match(run_id):
                self._remove_files(base)
                continue
            keeper = journal.get("keeper") or [0, ""]
            nonce = journal.get("nonce")
            if isinstance(nonce, list) and len(nonce) == 2 and isinstance(nonce[0], int):
                self.journal_nonces.append((nonce[0], str(nonce[1])))
            run = Run(
                run_id,
                base,
                journal.get("fingerprint", ""),
                float(journal.get("timeout", DEFAULT_TIMEOUT)),
                float(journal.get("started_at", 0)),
                (int(keeper[0]), str(keeper[1])),
            )
            self.runs[run_id] = run
            if status is not None:
                run.finish(status, status.get("state", "finished"))
            else:
                self.running += 1
                self._check_orphan(run)
        if self.running:
            threading.Thread(target=self._watch_orphans, name="orphans", daemon=True).start()

    def _check_orphan(self, run: Run) -> None:
        """A run of an earlier agent: finished, still running, or lost."""
        _, spawned, status = read_run_file(run.base + ".run")
        if status is not None:
            self._finished(run, status, status.get("state", "finished"))
        elif not _pid_matches(*run.keeper):
            self._lose(run, "the process that ran it is gone and left no exit status")
        elif not spawned and time.time() - run.started_at > 10:
            self._lose(run, "the agent stopped before the command was started")

    def _watch_orphans(self) -> None:
        while True:
            time.sleep(0.2)
            with self.lock:
                orphans = [
                    r
                    for r in self.runs.values()
                    if r.state == "running" and r.keeper != self.keeper
                ]
            if not orphans:
                return
            for run in orphans:
                self._check_orphan(run)

    def _lose(self, run: Run, reason: str) -> None:
        status = {"state": "lost", "reason": reason, "finished_at": round(time.time(), 6)}
        try:
            fd = os.open(run.base + ".run", os.O_WRONLY | os.O_APPEND)
            try:
                os.write(fd, json.dumps({"status": status}).encode("utf-8") + b"\n")
            finally:
                os.close(fd)
        except OSError:
            pass
        self._finished(run, status, "lost")

    def _finished(self, run: Run, status: Dict[str, Any], state: str = "finished") -> None:
        with self.lock:
            if run.done.is_set():
                return
            self.running -= 1
            run.finish(status, state)
            over = len(self.runs) - self.running > self.cfg.keep_finished_count
        if self.janitor is not None:
            finished = status.get("finished_at") or time.time()
            self.janitor.want(time.time() if over else finished + self.cfg.keep_finished_seconds)

    def next_prune(self) -> Optional[float]:
        """When prune() next has something to forget (None: nothing finished)."""
        with self.lock:
            finished = [r for r in self.runs.values() if r.done.is_set()]
        if not finished:
            return None
        if len(finished) > self.cfg.keep_finished_count:
            return time.time()
        oldest = min((r.status or {}).get("finished_at") or r.started_at for r in finished)
        return float(oldest) + self.cfg.keep_finished_seconds

    def _keeper_reader(self) -> None:
        sock = self.keeper_sock
        assert sock is not None
        buf = b""
        while True:
            try:
                data = sock.recv(65536)
            except InterruptedError:
                continue
            except OSError:
                data = b""
            if not data:
                break
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                msg = json.loads(line)
                run = self.runs.get(msg.get("id"))
                if run is not None and msg.get("op") == "exit":
                    self._finished(run, msg["status"])
        sys.stderr.write("kernel-agent: the run keeper died; exiting so that it restarts\n")
        sys.stderr.flush()
        os._exit(1)

    # executions

    def submit(self, spec: ExecSpec, nonce: Optional[Tuple[int, str]] = None) -> Tuple[Run, bool]:
        """Start a run, or find the run with the same id: (run, newly started). ``nonce`` is
        the (time, nonce) of the signed request: journalled with the run, it stays refused
        after a power cut even if the nonces file lost it."""
        fingerprint = spec.fingerprint()
        with self.lock:
            if spec.id is not None:
                existing = self.runs.get(spec.id)
                if existing is not None:
                    if existing.fingerprint != fingerprint:
                        raise HttpError(
                            409, "conflict", "id %s was used for another command" % spec.id
                        )
                    return existing, False
            if self.running >= self.cfg.max_concurrency:
                raise HttpError(429, "too_many", "%d executions are already running" % self.running)
            run_id = spec.id or os.urandom(12).hex()
            base = os.path.join(self.root, run_id)
            now = time.time()
            run = Run(run_id, base, fingerprint, spec.timeout, round(now, 6), self.keeper)
            # The journal entry exists before the command starts: an id never runs twice.
            journal = {
                "id": run_id,
                "fingerprint": fingerprint,
                "timeout": spec.timeout,
                "started_at": run.started_at,
                "keeper": list(self.keeper),
            }
            if nonce is not None:
                journal["nonce"] = list(nonce)
            line = json.dumps(journal).encode("utf-8") + b"\n"
            try:
                fd = os.open(base + ".run", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # left by a run that was pruned from memory only
                raise HttpError(409, "conflict", "id %s is still on disk" % run_id) from None
            except OSError as e:
                raise self.storage_error(e) from None
            try:
                if os.write(fd, line) != len(line):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                self.dir_created += 1
                created = self.dir_created
                if self.cfg.journal_fsync:
                    os.fdatasync(fd)  # the entry's data and size, not its times
            except OSError as e:
                _unlink(base + ".run")  # not journalled, so it must not run
                raise self.storage_error(e) from None
            finally:
                os.close(fd)
            self.runs[run_id] = run
            self.running += 1
        if self.cfg.journal_fsync:
            try:
                self._make_durable(created)
            except OSError as e:
                self._abandon(run, "its journal entry could not be made durable: %s" % e.strerror)
                raise self.storage_error(e) from None
        msg = {
            "op": "spawn",
            "id": run_id,
            "base": base,
            "cmd": spec.cmd,
            "stdin": spec.stdin,
            "env": spec.env,  # on top of the keeper's base environment
            "cwd": spec.cwd,
            "timeout": spec.timeout,
            "cap": self.cfg.max_output_bytes,
            "started_at": run.started_at,
        }
        data = json.dumps(msg).encode("utf-8") + b"\n"
        with self.send_lock:
            assert self.keeper_sock is not None
            self.keeper_sock.sendall(data)
        return run, True

    def storage_error(self, e: OSError) -> HttpError:
        """The answer when the state dir cannot take a new run's journal: 507, naming it."""
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            slug, what = "storage_full", "is full"
        else:
            slug, what = "state_dir_unwritable", "cannot be written"
        return HttpError(
            507,
            slug,
            "state dir %s %s (%s): new runs are refused until it can be written"
            % (self.cfg.state_dir, what, e.strerror),
        )

    def _abandon(self, run: Run, reason: str) -> None:
        """A run that was registered but must not start: forgotten, its journal removed."""
        with self.lock:
            if self.runs.get(run.id) is run:
                del self.runs[run.id]
                self.running -= 1
        _unlink(run.base + ".run")
        # whoever attached to it meanwhile (same id) learns it did not start
        run.finish({"exit_code": 127, "error": "not started: " + reason}, "finished")

    def _make_durable(self, created: int) -> None:
        """The directory entry of the ``created``-th journal file is on disk when this
        returns. One fsync of the directory covers every entry created before it started, so
        concurrent runs share it rather than queue for one each."""
        with self.dir_lock:
            if self.dir_synced >= created:
                return
            covered = self.dir_created  # read before the fsync: these entries exist already
            os.fsync(self.dir_fd)
            self.dir_synced = covered

    def get(self, run_id: str) -> Run:
        run = self.runs.get(run_id) if _ID_RE.match(run_id) else None
        if run is None:
            raise HttpError(404, "not_found", "no execution with id %s" % run_id[:128])
        return run

    def cancel(self, run: Run) -> None:
        if run.done.is_set():
            return
        if run.keeper == self.keeper:  # our keeper: told over its socket, no disk needed
            data = json.dumps({"op": "cancel", "id": run.id}).encode("utf-8") + b"\n"
            with self.send_lock:
                assert self.keeper_sock is not None
                self.keeper_sock.sendall(data)
            return
        # A run of an earlier agent's keeper: a file it looks for, and a signal to look.
        try:
            os.close(os.open(run.base + ".cancel", os.O_WRONLY | os.O_CREAT, 0o600))
        except OSError as e:
            raise self.storage_error(e) from None
        pid, start = run.keeper
        if _pid_matches(pid, start):
            os.kill(pid, signal.SIGUSR1)

    def result(self, run: Run, output: bool = True) -> Dict[str, Any]:
        st = run.status or {}
        result: Dict[str, Any] = {
            "id": run.id,
            "state": run.state,
            "exit_code": st.get("exit_code"),
            "signal": st.get("signal"),
            "timed_out": bool(st.get("timed_out", False)),
            "cancelled": bool(st.get("cancelled", False)),
            "truncated": bool(st.get("truncated", False)),
            "duration": st.get("duration"),
            "started_at": run.started_at,
            "finished_at": st.get("finished_at"),
        }
        if run.state == "lost":
            result["reason"] = st.get("reason", "")
        if st.get("error"):
            result["error"] = st["error"]
        if st.get("output_error"):
            result["output_error"] = st["output_error"]
        if output:
            cap = self.cfg.max_output_bytes
            sizes = st.get("sizes") or [cap, cap]
            for name, size in zip(("stdout", "stderr"), sizes):  # noqa: B905 - 3.8
                data = _read_capped("%s.%s" % (run.base, name), cap) if size else b""
                result[name] = data.decode("utf-8", "replace")
        return result

    def prune(self) -> None:
        """Forget finished runs past the age or count limit."""
        now = time.time()
        with self.lock:
            done = sorted(
                (r for r in self.runs.values() if r.done.is_set()),
                key=lambda r: (r.status or {}).get("finished_at") or r.started_at,
            )
            excess = len(done) - self.cfg.keep_finished_count
            doomed = []
            for i, run in enumerate(done):
                finished = (run.status or {}).get("finished_at") or run.started_at
                if i < excess or finished + self.cfg.keep_finished_seconds < now:
                    doomed.append(run)
                    del self.runs[run.id]
        for run in doomed:
            self._remove_files(run.base)

    @staticmethod
    def _remove_files(base: str) -> None:
        for suffix in (".stdout", ".stderr", ".cancel", ".run"):
            _unlink(base + suffix)


class Janitor:
    """Forgets finished runs past retention and expired nonces when that is due, not on a
    clock: an agent with nothing to forget never wakes. Passes are at least GAP apart, so a
    busy agent prunes in batches, as often as it did every 30 s before."""

    GAP = 30.0

    def __init__(self, store: RunStore, nonces: NonceCache):
        self.store = store
        self.nonces = nonces
        self.event = threading.Event()
        self.next_wake = float("inf")

    def want(self, at: float) -> None:
        """Something will be due at ``at`` (unix time): wake then, if not sooner anyway."""
        if at < self.next_wake - 1.0:
            self.next_wake = at
            self.event.set()

    def due(self) -> float:
        due = float("inf")
        prune = self.store.next_prune()
        if prune is not None:
            due = prune
        oldest = self.nonces.oldest()
        if oldest is not None:
            due = min(due, oldest + self.nonces.window + 1.0)
        return due

    def run(self) -> None:
        last = float("-inf")
        while True:
            due = max(self.due(), last + self.GAP)
            self.next_wake = due
            wait = due - time.time()
            if wait > 0:
                self.event.wait(None if due == float("inf") else wait)
                self.event.clear()
                continue  # woken by want(), or the time has come: look again
            last = time.time()
            try:
                self.store.prune()
                self.nonces.compact()
            except OSError as e:
                sys.stderr.write("kernel-agent: clean-up failed: %s\n" % e)


def command_env() -> Dict[str, str]:
    """The environment commands start from: the agent's own, with a usable PATH and HOME."""
    env = dict(os.environ)
    env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    if "HOME" not in env:
        try:
            import pwd

            env["HOME"] = pwd.getpwuid(os.getuid()).pw_dir
        except (ImportError, KeyError):
            env["HOME"] = "/"
    return env


# ------------------------------------------------------------------------------------ http

_REASONS = {
    100: "Continue",
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    413: "Payload Too Large",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    507: "Insufficient Storage",
}
_MAX_LINE = 16384
_HEX_RE = re.compile(rb"\A[0-9A-Fa-f]+\Z")
_MAX_HEADERS = 100
# Deadlines of connections nobody is serving yet (see "HTTP server" in docs/agent.md).
_FIRST_BYTE_TIMEOUT = 5.0  # a new connection must start its request within this (s)
_IDLE_TIMEOUT = 75.0  # a kept-alive connection may wait this long for its next request
_THREAD_LINGER = 1.0  # a connection's thread waits this long for the next request, then parks it
_FENCE_TIMEOUT = 2.0  # a refused address has this long to send its request line
_FENCE_MAX = 64  # refused connections being answered at once; beyond, the oldest is dropped
_LEGACY_REFUSED = '{"code":-1,"err":"非服务器IP","msg":"非服务器IP"}'.encode()


class _Closed(Exception):
    """The client went away or was too slow: drop the connection without an answer."""


class Request:
    __slots__ = ("body", "headers", "method", "path", "peer", "query", "target")

    def __init__(self, method: str, target: str, headers: Dict[str, str], peer: str):
        self.method = method
        self.target = target
        self.path, _, self.query = target.partition("?")
        self.path = self.path.partition("#")[0]
        self.headers = headers
        self.peer = peer
        self.body = b""


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class Connection:
    """A connection being served by its own thread: requests in a keep-alive loop, each under
    a deadline. It is given a thread only once its client has sent something; between
    requests it goes back to the accept loop (``AgentServer``), which holds it without one."""

    close = False
    method = ""
    status = 0
    http10 = False

    def __init__(self, server: AgentServer, sock: Any, peer: str, tls_done: bool):
        self.server = server
        self.sock = sock
        self.peer = peer
        self.tls_done = tls_done  # the TLS handshake happened in an earlier thread
        self.slot = True  # holds one of its address's unauthenticated slots (see authorized)
        self.buf = b""
        self.deadline = 0.0

    def run(self) -> None:
        park = False
        try:
            park = self.serve()
        except Exception as e:  # noqa: BLE001 - a bug must not kill the agent or leak a trace
            sys.stderr.write("kernel-agent: connection error from %s: %r\n" % (self.peer, e))
        finally:
            if not park:
                try:
                    self.sock.close()
                except OSError:
                    pass
            self.server.connection_ended(self, park)

    # reading with a deadline: a slow client gets request_timeout in total, not per byte

    def client_gone(self) -> bool:
        """True when the client has already closed its side (an EOF waits after its request).
        Plain TCP only: under TLS the close is inside the record layer, and this says False."""
        if self.buf or self.server.tls is not None:
            return False
        try:
            poller = select.poll()  # not select(): no limit on the descriptor's number
            poller.register(self.sock.fileno(), select.POLLIN)
            if not poller.poll(0):
                return False
            return self.sock.recv(1, socket.MSG_PEEK) == b""
        except OSError:  # reset by the peer: gone as well
            return True

    def _recv(self) -> None:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise _Closed()
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except OSError:
            raise _Closed() from None
        if not data:
            raise _Closed()
        self.buf += data

    def _read_line(self, limit: int = _MAX_LINE) -> bytes:
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line, self.buf = self.buf[: i + 1], self.buf[i + 1 :]
                return line.rstrip(b"\r\n")
            if len(self.buf) > limit:
                raise HttpError(431, "too_large", "request line or header too long", close=True)
            self._recv()

    def _read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._recv()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def _read_request(self) -> Request:
        # The client has sent something (the loop or the linger saw it): from now on the whole
        # request (line, headers, body) must arrive within request_timeout.
        self.deadline = time.monotonic() + self.server.cfg.request_timeout
        line = self._read_line()
        while not line:  # tolerate blank lines between requests
            line = self._read_line()
        parts = line.split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            raise HttpError(400, "bad_request", "malformed request line", close=True)
        method = parts[0].decode("latin-1")
        target = parts[1].decode("latin-1")
        self.http10 = parts[2] == b"HTTP/1.0"
        headers: Dict[str, str] = {}
        for _ in range(_MAX_HEADERS + 1):
            raw = self._read_line()
            if not raw:
                break
            name, sep, value = raw.decode("latin-1").partition(":")
            name = name.strip().lower()
            if not sep or not name or " " in name:
                raise HttpError(400, "bad_request", "malformed header line", close=True)
            value = value.strip()
            if name == "content-length" and headers.get(name, value) != value:
                raise HttpError(400, "bad_request", "conflicting Content-Length", close=True)
            headers[name] = headers[name] + ", " + value if name in headers else value
        else:
            raise HttpError(431, "too_large", "more than %d headers" % _MAX_HEADERS, close=True)
        if not target.startswith("/"):
            raise HttpError(400, "bad_request", "request target must be a path", close=True)
        return Request(method, target, headers, self.peer)

    def _read_body(self, req: Request) -> None:
        limit = self.server.cfg.max_body_bytes
        te = req.headers.get("transfer-encoding", "").lower()
        length_text = req.headers.get("content-length")
        if te:
            if length_text is not None:  # which one ends the body? (request smuggling)
                raise HttpError(
                    400, "bad_request", "Content-Length with Transfer-Encoding", close=True
                )
            if te != "chunked":
                raise HttpError(400, "bad_request", "only chunked transfer encoding", close=True)
            self._continue(req)
            body = b""
            while True:
                size_line = self._read_line().split(b";")[0].strip()
                # int(x, 16) also takes "-5", "+5", "0x5" and "5_0"
                if not _HEX_RE.match(size_line):
                    raise HttpError(400, "bad_request", "bad chunk size", close=True)
                size = int(size_line, 16) if len(size_line) <= 16 else limit + 1
                if size == 0:
                    while self._read_line():  # trailers
                        pass
                    break
                if len(body) + size > limit:
                    raise HttpError(413, "too_large", "body over %d bytes" % limit, close=True)
                body += self._read_exact(size)
                self._read_exact(2)
            req.body = body
        elif length_text is not None:
            if not _DIGITS_RE.match(length_text):
                raise HttpError(400, "bad_request", "bad Content-Length", close=True)
            # int() of thousands of digits is refused (and slow): such a length is too large
            length = int(length_text) if len(length_text) <= 19 else limit + 1
            if length > limit:  # decided before reading a byte of it
                raise HttpError(413, "too_large", "body over %d bytes" % limit, close=True)
            if length:
                self._continue(req)
                req.body = self._read_exact(length)

    def _continue(self, req: Request) -> None:
        if req.headers.get("expect", "").lower() == "100-continue":
            self._write(b"HTTP/1.1 100 Continue\r\n\r\n")

    # writing

    def _write(self, data: bytes) -> None:
        self.sock.settimeout(self.server.cfg.request_timeout)
        try:
            self.sock.sendall(data)
        except OSError:
            raise _Closed() from None

    def send(
        self, status: int, body: bytes, content_type: str = "application/json", close: bool = False
    ) -> None:
        close = close or self.close
        head = "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s\r\n" % (
            status,
            _REASONS.get(status, "Error"),
            content_type,
            len(body),
            "Connection: close\r\n" if close else "",
        )
        self.close = close
        self.status = status
        self._write(head.encode("latin-1") + (b"" if self.method == "HEAD" else body))

    def send_json(self, status: int, data: Any, close: bool = False) -> None:
        self.send(status, json_bytes(data), close=close)

    def send_error(self, err: HttpError) -> None:
        self.send_json(
            err.status, {"code": err.status, "error": err.slug, "msg": err.msg}, close=err.close
        )

    def start_chunked(self, content_type: str, first: bytes = b"") -> None:
        """The head of a chunked answer, and its ``first`` chunk in the same write."""
        head = "HTTP/1.1 200 OK\r\nContent-Type: %s\r\nTransfer-Encoding: chunked\r\n%s\r\n" % (
            content_type,
            "Connection: close\r\n" if self.close else "",
        )
        self.status = 200
        self._write(head.encode("latin-1") + (_chunk(first) if first else b""))

    def write_chunk(self, data: bytes, last: bool = False) -> None:
        """One chunk (none if ``data`` is empty); ``last`` ends the answer in the same write,
        so a short run's end goes out as one segment, not several."""
        self._write((_chunk(data) if data else b"") + (b"0\r\n\r\n" if last else b""))

    # the loop

    def serve(self) -> bool:
        """Serve requests until the connection ends (False) or falls idle (True: park it)."""
        server = self.server
        if server.tls is not None and not self.tls_done:
            try:
                self.sock.settimeout(server.cfg.request_timeout)
                self.sock = server.tls.wrap_socket(self.sock, server_side=True)
            except OSError:
                return False
            self.tls_done = True
        self.close = False
        while True:
            self.method = ""
            self.status = 0
            try:
                req = self._read_request()
            except _Closed:
                return False
            except HttpError as e:
                self._safe_error(e)
                return False
            self.method = req.method
            conn = req.headers.get("connection", "").lower()
            self.close = conn == "close" or (self.http10 and conn != "keep-alive")
            started = time.monotonic()
            try:
                server.dispatch(self, req)
            except _Closed:
                return False
            except HttpError as e:
                if not self._safe_error(e):
                    return False
            except Exception as e:  # noqa: BLE001 - a bug must not kill the agent or leak a trace
                sys.stderr.write(
                    "kernel-agent: internal error on %s %s: %r\n" % (req.method, req.path, e)
                )
                if not self._safe_error(HttpError(500, "internal", "internal error", close=True)):
                    return False
            if server.cfg.log_requests:
                sys.stderr.write(
                    "%s %s %s %d %.1fms\n"
                    % (
                        req.peer,
                        req.method,
                        req.path,
                        self.status,
                        (time.monotonic() - started) * 1000,
                    )
                )
            if self.close:
                return False
            if not self._next_request_soon():
                return True

    def _next_request_soon(self) -> bool:
        """Whether the next request starts within _THREAD_LINGER: a client sending requests
        back to back keeps its thread; an idle one is parked and costs only its socket."""
        if self.buf:
            return True
        try:
            if self.server.tls is not None and self.sock.pending():
                return True
            poller = select.poll()
            poller.register(self.sock.fileno(), select.POLLIN)
            return bool(poller.poll(int(_THREAD_LINGER * 1000)))
        except OSError:
            return False

    def _safe_error(self, err: HttpError) -> bool:
        if self.status:  # an answer had started: the connection can't carry another
            self.close = True
            return False
        try:
            self.send_error(err)
        except _Closed:
            return False
        return True


class _Parked:
    """A connection the accept loop holds without a thread. States: ``new`` (no byte yet),
    ``idle`` (between requests), ``queued`` (its request has started, waiting for its
    address's turn), ``fenced`` (a refused address: the loop answers it), ``closing`` (the
    loop has answered; what the client still sends is read and dropped until it closes)."""

    __slots__ = ("buf", "deadline", "handshake", "peer", "since", "sock", "state", "tls_done")

    def __init__(self, sock: Any, peer: str, state: str, deadline: float, tls_done: bool = False):
        self.sock = sock
        self.peer = peer
        self.state = state
        self.since = time.monotonic()
        self.deadline = deadline
        self.tls_done = tls_done
        self.handshake = False
        self.buf = b""


class AgentServer:
    """The listening socket and the loop that accepts connections and holds the ones that
    have nothing to be served (new, idle, queued, refused), so that none of them costs a
    thread; a connection gets a thread (``Connection``) once its client has sent something.

    Defences (docs/agent.md, "HTTP server"): an address outside every allow list is answered
    by the loop itself and never counts; a new connection has _FIRST_BYTE_TIMEOUT to start;
    at ``max_connections`` the oldest waiting connection of the address holding the most is
    dropped for the newcomer; at most ``max_unauthenticated_per_ip`` requests per address are
    read at once before their signature is checked, others wait their turn.
    """

    def __init__(self, cfg: Config, key: str, store: Optional[RunStore], nonces: NonceCache):
        self.cfg = cfg
        self.key = key
        self.store = store
        self.nonces = nonces
        self.started = time.time()
        self.allow = AddressSet(cfg.allow_ips, "allow_ips") if cfg.allow_ips else None
        self.legacy = (
            AddressSet(cfg.legacy_allow_ips, "legacy_allow_ips") if cfg.legacy_allow_ips else None
        )
        self.proxies = (
            AddressSet(cfg.trusted_proxies, "trusted_proxies") if cfg.trusted_proxies else None
        )
        # Who may hold a connection at all: with allow_ips, only the addresses of some list
        # (a proxy's clients are judged by X-Forwarded-For after their request).
        self.fence = (
            AddressSet(cfg.allow_ips + cfg.legacy_allow_ips + cfg.trusted_proxies, "allow_ips")
            if cfg.allow_ips
            else None
        )
        self.tls = None
        self._want: Tuple[Any, ...] = (BlockingIOError, InterruptedError)
        if cfg.tls_cert or cfg.tls_key:
            if not (cfg.tls_cert and cfg.tls_key):
                raise ConfigError("tls_cert and tls_key must be set together")
            import ssl

            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            try:
                ctx.load_cert_chain(cfg.tls_cert, cfg.tls_key)
            except (OSError, ssl.SSLError) as e:
                raise ConfigError("cannot load tls_cert/tls_key: %s" % e) from None
            self.tls = ctx
            self._want += (ssl.SSLWantReadError, ssl.SSLWantWriteError)
        host, port = cfg.listen_address()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.bind((host, port))
            self.socket.listen(1024)  # bursts wait in the kernel, not in a reset
        except OSError:
            self.socket.close()
            raise
        self.socket.setblocking(False)
        # State of the loop, touched by the loop's thread only; connection threads post
        # messages to _inbox and wake it through the pipe.
        self.poller = select.poll()
        self.parked: Dict[int, _Parked] = {}
        self.count = 0  # connections that count against max_connections (not refused ones)
        self.per_peer: Dict[str, int] = {}
        self.unauthenticated: Dict[str, int] = {}  # threads not yet past the signature check
        self.queues: Dict[str, Deque[_Parked]] = {}
        self.fenced = 0
        self._accept_paused_until = 0.0
        self._inbox: Deque[Tuple[Any, ...]] = collections.deque()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    def server_close(self) -> None:
        self.socket.close()
        for p in list(self.parked.values()):
            self._drop(p)
        os.close(self._wake_r)
        os.close(self._wake_w)

    # the loop (main thread)

    def serve_forever(self) -> None:
        listen_fd = self.socket.fileno()
        self.poller.register(listen_fd, select.POLLIN)
        self.poller.register(self._wake_r, select.POLLIN)
        while True:
            now = time.monotonic()
            soonest = self._expire(now)
            if self._accept_paused_until and now >= self._accept_paused_until:
                self._accept_paused_until = 0.0
                self.poller.register(listen_fd, select.POLLIN)
            elif self._accept_paused_until:
                soonest = min(soonest or self._accept_paused_until, self._accept_paused_until)
            # No deadline pending: sleep until something happens (an idle agent never wakes).
            timeout = -1 if soonest is None else max(0, int((soonest - now) * 1000) + 1)
            for fd, _ in self.poller.poll(timeout):
                if fd == listen_fd:
                    self._accept()
                elif fd == self._wake_r:
                    try:
                        while os.read(self._wake_r, 4096):
                            pass
                    except BlockingIOError:
                        pass
                else:
                    p = self.parked.get(fd)
                    if p is None:
                        continue
                    try:
                        self._readable(p)
                    except Exception as e:  # noqa: BLE001 - drop that connection, keep serving
                        sys.stderr.write("kernel-agent: connection error from %s: %r\n" % (
                            p.peer, e))  # fmt: skip
                        if self.parked.get(fd) is p:
                            self._drop(p)
            self._messages()

    def _accept(self) -> None:
        for _ in range(64):  # then let the rest of the loop run
            try:
                sock, addr = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Out of descriptors: stop accepting for a moment rather than spin.
                    sys.stderr.write("kernel-agent: cannot accept: %s\n" % e.strerror)
                    self.poller.unregister(self.socket.fileno())
                    self._accept_paused_until = time.monotonic() + 0.1
                return  # ECONNABORTED and the like: that client is gone already
            peer = addr[0] if addr else ""
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            if self.fence is not None and peer not in self.fence:
                self._fence(sock, peer)
                continue
            if self.count >= self.cfg.max_connections and not self._evict():
                sock.close()  # every connection is being served: none can make room
                continue
            self.count += 1
            self.per_peer[peer] = self.per_peer.get(peer, 0) + 1
            first_byte = min(_FIRST_BYTE_TIMEOUT, float(self.cfg.request_timeout))
            self._park(_Parked(sock, peer, "new", time.monotonic() + first_byte))

    def _park(self, p: _Parked) -> None:
        fd = p.sock.fileno()
        self.parked[fd] = p
        self.poller.register(fd, select.POLLIN)

    def _readable(self, p: _Parked) -> None:
        if p.state in ("fenced", "closing"):
            return self._fence_io(p)
        if not p.tls_done:  # plain TCP, or TLS before its handshake: the raw socket
            try:
                if p.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                    return self._drop(p)  # closed without a word
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return self._drop(p)
        self.poller.unregister(p.sock.fileno())
        p.deadline = time.monotonic() + self.cfg.request_timeout
        self._serve(p)

    def _serve(self, p: _Parked) -> None:
        """Give ``p`` a thread, or queue it behind its address's unauthenticated requests."""
        peer = p.peer
        if self.unauthenticated.get(peer, 0) >= self.cfg.max_unauthenticated_per_ip:
            if p.state != "queued":
                p.state = "queued"
                self.queues.setdefault(peer, collections.deque()).append(p)
            return
        del self.parked[p.sock.fileno()]
        self.unauthenticated[peer] = self.unauthenticated.get(peer, 0) + 1
        conn = Connection(self, p.sock, peer, p.tls_done)
        try:
            threading.Thread(target=conn.run, daemon=True).start()
        except RuntimeError as e:  # can't start new thread: drop this one, keep serving
            sys.stderr.write("kernel-agent: %s\n" % e)
            self._release(peer)
            p.sock.close()
            self._forget(peer)

    def _release(self, peer: str) -> None:
        """An unauthenticated slot of ``peer`` is free: the next of its queue may go."""
        left = self.unauthenticated.get(peer, 0) - 1
        if left > 0:
            self.unauthenticated[peer] = left
        else:
            self.unauthenticated.pop(peer, None)
        queue = self.queues.get(peer)
        while queue and self.unauthenticated.get(peer, 0) < self.cfg.max_unauthenticated_per_ip:
            self._serve(queue.popleft())
        if not queue:
            self.queues.pop(peer, None)

    def _forget(self, peer: str) -> None:
        self.count -= 1
        left = self.per_peer.get(peer, 0) - 1
        if left > 0:
            self.per_peer[peer] = left
        else:
            self.per_peer.pop(peer, None)

    def _drop(self, p: _Parked) -> None:
        fd = p.sock.fileno()
        if self.parked.pop(fd, None) is None:
            return
        if p.state == "queued":
            queue = self.queues.get(p.peer)
            if queue is not None:
                queue.remove(p)
                if not queue:
                    del self.queues[p.peer]
        else:
            self.poller.unregister(fd)
        try:
            p.sock.close()
        except OSError:
            pass
        if p.state in ("fenced", "closing"):
            self.fenced -= 1
        else:
            self._forget(p.peer)

    def _evict(self) -> bool:
        """Make room at max_connections: drop the oldest waiting connection (new, idle, or
        queued, in that order) of the address that holds the most. The crowd pays, not the
        newcomer."""
        victim = None
        best: Tuple[int, int, float] = (0, 0, 0.0)
        for p in self.parked.values():
            if p.state in ("new", "idle", "queued"):
                key = (self.per_peer.get(p.peer, 0), p.state != "queued", -p.since)
                if victim is None or key > best:
                    victim, best = p, key
        if victim is None:
            return False
        self._drop(victim)
        return True

    def _expire(self, now: float) -> Optional[float]:
        """Drop connections past their deadline; the next deadline (None: nothing waits)."""
        soonest: Optional[float] = None
        for p in list(self.parked.values()):
            if p.deadline <= now:
                self._drop(p)
            elif soonest is None or p.deadline < soonest:
                soonest = p.deadline
        return soonest

    # messages from connection threads (any thread may post; the loop reads them)

    def _post(self, msg: Tuple[Any, ...]) -> None:
        self._inbox.append(msg)
        try:
            os.write(self._wake_w, b"!")
        except OSError:  # full (the loop will read it all) or closed (shutting down)
            pass

    def authorized(self, conn: Connection) -> None:
        """The request on ``conn`` is signed (or from a legacy address): its address's slot
        is free for the next; the connection is now as trusted as any."""
        if conn.slot:
            conn.slot = False
            self._post(("release", conn.peer))

    def connection_ended(self, conn: Connection, park: bool) -> None:
        self._post(("end", conn.peer, conn.sock if park else None, conn.slot, conn.tls_done))

    def _messages(self) -> None:
        while self._inbox:
            msg = self._inbox.popleft()
            if msg[0] == "release":
                self._release(msg[1])
                continue
            _, peer, sock, slot, tls_done = msg
            if sock is None:
                self._forget(peer)
            else:
                self._park(_Parked(sock, peer, "idle", time.monotonic() + _IDLE_TIMEOUT, tls_done))
            if slot:
                self._release(peer)

    # refused addresses: answered by the loop, without a thread, and never counted

    def _fence(self, sock: socket.socket, peer: str) -> None:
        if self.fenced >= _FENCE_MAX:
            oldest = min(
                (p for p in self.parked.values() if p.state in ("fenced", "closing")),
                key=lambda p: p.since,
            )
            self._drop(oldest)
        sock.setblocking(False)
        handshake = False
        if self.tls is not None:
            try:
                sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            except OSError:
                sock.close()
                return
            handshake = True
        p = _Parked(sock, peer, "fenced", time.monotonic() + _FENCE_TIMEOUT)
        p.handshake = handshake
        self.fenced += 1
        self._park(p)

    def _fence_io(self, p: _Parked) -> None:
        try:
            if p.handshake:
                p.sock.do_handshake()
                p.handshake = False
            data = p.sock.recv(8192)
        except self._want:
            return
        except OSError:
            return self._drop(p)
        if not data:
            return self._drop(p)
        if p.state == "closing":
            return  # dropped: the answer has gone, this is the rest of the request
        p.buf += data
        if b"\n" not in p.buf and len(p.buf) < 8192:
            return
        try:
            p.sock.send(self._fence_answer(p.buf.split(b"\n", 1)[0], p.peer))
            # Close only once the client has read the answer and closed: closing with its
            # request unread would reset the connection, and the reset can overtake the answer.
            p.sock.shutdown(socket.SHUT_WR)
        except OSError:
            return self._drop(p)
        p.state = "closing"
        p.buf = b""
        p.deadline = time.monotonic() + _FENCE_TIMEOUT

    def _fence_answer(self, line: bytes, peer: str) -> bytes:
        """What a refused address gets: /healthz still answers (it says only ok), the legacy
        path the Go agent's -1 reply, anything else 403."""
        parts = line.rstrip(b"\r").split(b" ")
        method = parts[0]
        path = parts[1].split(b"?")[0] if len(parts) > 1 else b""
        ctype = "application/json"
        if path == b"/healthz" and method in (b"GET", b"HEAD"):
            status, body, ctype = 200, b"ok", "text/plain"
        elif path == b"/api/ExecCmd" and self.legacy is not None:
            status, body = 403, _LEGACY_REFUSED
        else:
            msg = "source address %s is not allowed" % peer
            status, body = 403, json_bytes({"code": 403, "error": "forbidden", "msg": msg})
        head = (
            "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
        )
        data = (head % (status, _REASONS[status], ctype, len(body))).encode("latin-1")
        return data + (b"" if method == b"HEAD" else body)

    # routing

    def client_ip(self, conn: Connection, req: Request) -> str:
        forwarded = req.headers.get("x-forwarded-for")
        if forwarded and self.proxies is not None and req.peer in self.proxies:
            return forwarded.split(",")[-1].strip()
        return req.peer

    def dispatch(self, conn: Connection, req: Request) -> None:
        path = req.path
        ip = self.client_ip(conn, req)
        if path == "/api/ExecCmd":
            return self.legacy_exec(conn, req, ip)
        if path == "/healthz":  # liveness only, no details: not fenced, for monitors
            self._allow(req, ("GET", "HEAD"))
            conn._read_body(req)
            return conn.send(200, b"ok", "text/plain")
        if self.allow is not None and ip not in self.allow:
            raise HttpError(
                403, "forbidden", "source address %s is not allowed" % ip[:100], close=True
            )
        handler: Optional[Callable[[Connection, Request], None]] = None
        if path == "/api/v2/exec":
            self._allow(req, ("POST",))
            handler = self.exec_
        elif path.startswith("/api/v2/exec/"):
            self._allow(req, ("GET", "DELETE"))
            handler = self.exec_status if req.method == "GET" else self.exec_cancel
        elif path == "/api/v2/info":
            self._allow(req, ("GET",))
            handler = self.info
        else:
            conn._read_body(req)
            raise HttpError(404, "not_found", "no route %s" % path[:200])
        conn._read_body(req)
        self.authenticate(req)
        self.authorized(conn)
        handler(conn, req)

    @staticmethod
    def _allow(req: Request, methods: Tuple[str, ...]) -> None:
        if req.method not in methods:
            raise HttpError(
                405,
                "method_not_allowed",
                "%s only" % " or ".join(methods),
                close=bool(req.headers.get("content-length", "0") != "0"),
            )

    def authenticate(self, req: Request) -> None:
        error, timestamp, nonce = verify_signature(
            self.key, req.method, req.target, req.headers, req.body, time.time()
        )
        if error is None:
            error = self.nonces.add(nonce, timestamp)
        if error is not None:
            raise HttpError(401, "unauthorized", error)

    def _store(self) -> RunStore:
        if self.store is None:
            raise HttpError(500, "internal", "no run store")
        return self.store

    def exec_(self, conn: Connection, req: Request) -> None:
        spec = parse_exec_request(parse_json_body(req.body))
        store = self._store()
        if conn.client_gone() and (spec.id is None or spec.id not in store.runs):
            # The client hung up before the run could start: typically this host was frozen
            # while the request waited in its socket, and the sender has already reported
            # the run as not started. Starting it now would run a command nobody is waiting
            # for and which its sender believes did not run; an id stays unknown (re-attach
            # finds no record: never ran).
            sys.stderr.write(
                "kernel-agent: %s: client gone before the run started; not started\n"
                % (spec.id or "exec",)
            )
            conn.close = True
            raise _Closed()
        nonce = (int(req.headers["x-kernel-time"]), req.headers["x-kernel-nonce"])
        run, _created = store.submit(spec, nonce)
        if spec.stream:
            return self.stream(conn, run)
        run.done.wait(run.timeout + KILL_GRACE + LINGER + 60)
        conn.send_json(200, store.result(run))

    def stream(self, conn: Connection, run: Run) -> None:
        store = self._store()

        def event(data: Dict[str, Any]) -> bytes:
            return json_bytes(data) + b"\n"

        started = event({"event": "started", "id": run.id, "started_at": run.started_at})
        conn.start_chunked("application/x-ndjson", started)

        cap = self.cfg.max_output_bytes
        # [name, open file or None (the keeper creates it at the first byte), decoder]
        streams: List[List[Any]] = [
            [name, None, codecs.getincrementaldecoder("utf-8")("replace")]
            for name in ("stdout", "stderr")
        ]
        # Once the run has finished, what is left is sent with the exit event in one write
        # (a short run's whole answer is then two segments: head+started, output+exit+end).
        pending = b""
        try:
            while True:
                finished = run.done.is_set()  # read after this: nothing can follow the exit
                out = b""
                got = False
                for stream in streams:
                    name, f, decoder = stream
                    if f is None:
                        try:
                            f = stream[1] = open("%s.%s" % (run.base, name), "rb")
                        except FileNotFoundError:
                            continue
                    data = f.read(min(1 << 20, max(0, cap - f.tell())))
                    got = got or bool(data)
                    text = decoder.decode(data)
                    if text:
                        out += event({"event": name, "data": text})
                if finished and not got:
                    for name, _, decoder in streams:
                        text = decoder.decode(b"", final=True)
                        if text:
                            out += event({"event": name, "data": text})
                if finished:
                    pending += out
                    if not got:
                        break
                    if len(pending) < 1 << 18:
                        continue
                    out, pending = pending, b""
                if out:
                    conn.write_chunk(out)
                if not got:
                    run.done.wait(0.05)
        finally:
            for _, f, _ in streams:
                if f is not None:
                    f.close()
        final = {"event": "exit"}
        final.update(store.result(run, output=False))
        conn.write_chunk(pending + event(final), last=True)

    def exec_status(self, conn: Connection, req: Request) -> None:
        store = self._store()
        run = store.get(req.path[len("/api/v2/exec/") :])
        wait = parse_query(req.query).get("wait")
        if wait:
            try:
                seconds = min(max(float(wait[0]), 0.0), 300.0)
            except ValueError:
                seconds = -1.0
            if not 0 <= seconds <= 300:  # also NaN
                raise _bad("wait", "must be a number of seconds")
            run.done.wait(seconds)
        conn.send_json(200, store.result(run))

    def exec_cancel(self, conn: Connection, req: Request) -> None:
        store = self._store()
        run = store.get(req.path[len("/api/v2/exec/") :])
        store.cancel(run)
        run.done.wait(KILL_GRACE + LINGER + 2)
        conn.send_json(200, store.result(run))

    def info(self, conn: Connection, req: Request) -> None:
        conn.send_json(200, host_info(self))

    # legacy v1: the seed's Go agent

    def legacy_exec(self, conn: Connection, req: Request, ip: str) -> None:
        if self.legacy is None:
            conn._read_body(req)
            raise HttpError(404, "not_found", "the legacy API is off (set legacy_allow_ips)")
        if ip not in self.legacy:
            return conn.send(403, _LEGACY_REFUSED, close=True)
        try:
            conn._read_body(req)
        except HttpError as e:
            return conn.send_json(e.status, legacy_error(e.msg), close=e.close)
        self.authorized(conn)  # the address list is the legacy API's only fence
        try:
            cmd = legacy_command(req)
        except _LegacyCmd as e:
            return conn.send_json(200, legacy_error(str(e)))
        try:
            run, _ = self._store().submit(ExecSpec(cmd))
        except HttpError as e:  # 429, 507
            return conn.send_json(e.status, legacy_error(e.msg))
        run.done.wait(run.timeout + KILL_GRACE + LINGER + 60)
        conn.send_json(200, legacy_reply(self._store().result(run)))


class _LegacyCmd(Exception):
    """The reason a legacy request has no command to run (the -2 reply's text)."""


_PERCENT_BYTES_RE = re.compile(rb"%([0-9A-Fa-f]{2})")


def _unquote_plus(data: bytes) -> bytes:
    return _PERCENT_BYTES_RE.sub(
        lambda m: bytes.fromhex(m.group(1).decode()), data.replace(b"+", b" ")
    )


def _form_value(data: bytes, name: bytes) -> Optional[bytes]:
    """The first ``name`` of a urlencoded form (``a=1&cmd=x+y%21``), decoded to bytes: the
    caller decides whether they are text."""
    for part in data.split(b"&"):
        key, sep, value = part.partition(b"=")
        if sep and _unquote_plus(key) == name:
            return _unquote_plus(value)
    return None


def legacy_command(req: Request) -> str:
    """The cmd of a legacy request: JSON body, form body or query string. ``""`` is a
    command (bash runs it and exits 0, as under the Go agent); no cmd, or one that is not
    text a process can take, raises _LegacyCmd."""
    body = req.body
    cmd: Any = None
    if body.lstrip().startswith(b"{"):
        try:
            data = json.loads(body.decode("utf-8"))
            cmd = data.get("cmd") if isinstance(data, dict) else None
        except (ValueError, RecursionError):
            cmd = None
    else:
        cmd = _form_value(body, b"cmd")
    if cmd is None:
        cmd = _form_value(req.query.encode("latin-1"), b"cmd")
    if cmd is None:
        raise _LegacyCmd("missing cmd")
    if isinstance(cmd, bytes):
        try:
            cmd = cmd.decode("utf-8")
        except UnicodeDecodeError:
            raise _LegacyCmd("cmd is not valid text: not UTF-8") from None
    if not isinstance(cmd, str):
        raise _LegacyCmd("cmd must be a string")
    try:
        return _text("cmd", cmd)
    except HttpError as e:
        raise _LegacyCmd("cmd is not valid text: %s" % e.msg.partition(": ")[2]) from None


def legacy_error(msg: str) -> Dict[str, Any]:
    """A -2 reply. The original server reads ``err`` whenever ``code`` is not 0."""
    return {"code": -2, "err": msg, "msg": msg}


def legacy_reply(result: Dict[str, Any]) -> Dict[str, Any]:
    """Shape a result the way the Go agent answered (its error text is Go's ExitError)."""
    code = result.get("exit_code")
    if code == 0:
        return {"code": 0, "msg": result["stdout"]}
    if code is not None:
        err = "exit status %d" % code
    elif result.get("signal"):
        err = "signal: %s" % _signal_text(result["signal"])
    else:
        state = result.get("state", "failed")
        reason = result.get("reason") or result.get("error")
        return legacy_error("execution %s%s" % (state, ": " + reason if reason else ""))
    return {"code": 1, "err": err, "msg": result["stdout"]}


def _signal_text(signum: int) -> str:
    names = {9: "killed", 15: "terminated", 2: "interrupt", 6: "aborted", 11: "segmentation fault"}
    return names.get(signum, "signal %d" % signum)


def _os_release() -> Dict[str, str]:
    info: Dict[str, str] = {}
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                for line in f:
                    name, sep, value = line.strip().partition("=")
                    if sep:
                        info[name] = value.strip().strip("\"'")
            break
        except OSError:
            continue
    return info


def host_info(server: AgentServer) -> Dict[str, Any]:
    import platform

    osr = _os_release()
    try:
        with open("/proc/uptime") as f:
            boot_uptime: Optional[float] = float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        boot_uptime = None
    cfg = server.cfg
    store = server.store
    return {
        "version": VERSION,
        "protocol": PROTOCOL,
        "hostname": socket.gethostname(),
        "os": osr.get("PRETTY_NAME") or platform.system(),
        "os_id": osr.get("ID", ""),
        "os_version": osr.get("VERSION_ID", ""),
        "kernel": platform.release(),
        "arch": platform.machine(),
        "python": platform.python_version(),
        "uptime": round(time.time() - server.started, 3),
        "host_uptime": boot_uptime,
        "pid": os.getpid(),
        "keeper_pid": store.keeper[0] if store else None,
        "running": store.running if store else 0,
        "tls": server.tls is not None,
        "legacy": server.legacy is not None,
        "limits": {
            "max_concurrency": cfg.max_concurrency,
            "max_output_bytes": cfg.max_output_bytes,
            "max_body_bytes": cfg.max_body_bytes,
            "default_timeout": DEFAULT_TIMEOUT,
            "max_timeout": MAX_TIMEOUT,
            "kill_grace": KILL_GRACE,
            "request_timeout": cfg.request_timeout,
        },
    }


# ------------------------------------------------------------------------------------ main

USAGE_EPILOG = """\
commands:
  kernel-agent [options]                  run the agent
  kernel-agent init [--key-file F] [--force]
                                          write a fresh key (mode 0600) and print it
  kernel-agent check [options]            validate the settings and the key, then exit

Every option is also a setting of the config file (key = value lines, # comments); options
given on the command line win over the file. Lists are comma-separated.
"""


def build_parser() -> Any:
    import argparse

    parser = argparse.ArgumentParser(
        prog="kernel-agent",
        description="Kernel agent: runs commands for a Kernel server (protocol v2).",
        epilog=USAGE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="config file (default %s, used if it exists)" % DEFAULT_CONFIG,
    )
    parser.add_argument("--version", action="version", version="kernel-agent " + VERSION)
    for name, kind, default, text in SETTINGS:
        flag = "--" + name.replace("_", "-")
        shown = ",".join(default) if isinstance(default, list) else default
        helptext = "%s (default: %s)" % (text, shown if shown not in ("", []) else "none")
        if kind == "bool":
            parser.add_argument(
                flag, dest=name, nargs="?", const="true", metavar="BOOL", help=helptext
            )
        else:
            parser.add_argument(flag, dest=name, metavar=kind.upper(), help=helptext)
    return parser


def load_config(argv: List[str]) -> Config:
    args = build_parser().parse_args(argv)
    cfg = Config()
    path = args.config
    if path is None and os.path.exists(DEFAULT_CONFIG):
        path = DEFAULT_CONFIG
    if path:
        for name, value in read_config_file(path).items():
            cfg.set(name, value)
    for name, _, _, _ in SETTINGS:
        value = getattr(args, name)
        if value is not None:
            cfg.set(name, value)
    cfg.listen_address()
    for name in ("allow_ips", "legacy_allow_ips", "trusted_proxies"):
        AddressSet(getattr(cfg, name), name)
    return cfg


def init_main(argv: List[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="kernel-agent init", description="Write a fresh agent key and print it."
    )
    parser.add_argument(
        "--key-file",
        default=dict((s[0], s[2]) for s in SETTINGS)["key_file"],
        help="where to write the key (default %(default)s)",
    )
    parser.add_argument("--force", action="store_true", help="replace an existing key")
    args = parser.parse_args(argv)
    if os.path.exists(args.key_file) and not args.force:
        sys.stderr.write("kernel-agent: %s exists; use --force to replace it\n" % args.key_file)
        return 1
    key = new_key()
    try:
        write_key(args.key_file, key)
    except OSError as e:
        sys.stderr.write("kernel-agent: cannot write %s: %s\n" % (args.key_file, e.strerror))
        return 1
    print(key)
    return 0


def serve(cfg: Config) -> int:
    key = read_key(cfg.key_file)
    bash = _which("bash") or "/bin/bash"
    try:
        os.makedirs(cfg.state_dir, mode=0o700, exist_ok=True)
    except OSError as e:
        raise ConfigError("cannot create state_dir %s: %s" % (cfg.state_dir, e.strerror)) from None
    store = RunStore(cfg, bash)
    # The keeper is forked before any thread exists (fork in a threaded process is unsafe)
    # and before the listening socket, which it must not hold.
    keeper_sock, keeper_pid = start_keeper(bash, command_env())
    store.attach_keeper(keeper_sock, keeper_pid)
    store.load()
    nonces = NonceCache(os.path.join(cfg.state_dir, "nonces"))
    for timestamp, nonce in store.journal_nonces:  # what the nonces file may have lost
        nonces.remember(nonce, timestamp)
    store.journal_nonces = []
    try:
        server = AgentServer(cfg, key, store, nonces)
    except OSError as e:
        raise ConfigError("cannot listen on %s: %s" % (cfg.listen, e.strerror)) from None

    janitor = Janitor(store, nonces)
    store.janitor = nonces.janitor = janitor
    threading.Thread(target=janitor.run, name="janitor", daemon=True).start()

    def stop(signum: int, frame: Any) -> None:
        # Nothing to drain: runs belong to the keeper and the journal is on disk.
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    address = server.socket.getsockname()  # the real port, if listen asked for port 0
    sys.stderr.write(
        "kernel-agent %s listening on %s:%s%s (keeper pid %d)\n"
        % (VERSION, address[0], address[1], " with TLS" if server.tls else "", keeper_pid)
    )
    sys.stderr.flush()
    try:
        server.serve_forever()
    finally:
        server.server_close()
        nonces.close()
    return 0


def check_main(argv: List[str]) -> int:
    cfg = load_config(argv)
    read_key(cfg.key_file)
    if cfg.tls_cert or cfg.tls_key:
        if not (cfg.tls_cert and cfg.tls_key):
            raise ConfigError("tls_cert and tls_key must be set together")
        import ssl

        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cfg.tls_cert, cfg.tls_key)
        except (OSError, ssl.SSLError) as e:
            raise ConfigError("cannot load tls_cert/tls_key: %s" % e) from None
    for name, _, _, _ in SETTINGS:
        print("%s = %s" % (name, _format_setting(getattr(cfg, name))))
    return 0


def _format_setting(value: Any) -> str:
    return (
        ",".join(value)
        if isinstance(value, list)
        else str(value).lower()
        if isinstance(value, bool)
        else str(value)
    )


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["init"]:
            return init_main(argv[1:])
        if argv[:1] == ["check"]:
            return check_main(argv[1:])
        return serve(load_config(argv))
    except ConfigError as e:
        sys.stderr.write("kernel-agent: %s\n" % e)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

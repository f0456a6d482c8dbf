"""Client for the agent's protocol v2 (ARCHITECTURE.md §2): signing, exec, stream, status,
cancel, info, healthz. Sync (`AgentClient`, on one kept-alive httpx client) and async
(`AsyncAgentClient`, on one kept-alive aiohttp session: the server's hot path, where aiohttp
costs a fifth of the CPU per request that httpx's async client does).

TLS pinning: with ``tls_fingerprint`` set, certificates are not checked against CAs (agents
use self-signed ones); instead the SHA-256 of the agent's certificate is compared with the pin
right after the TLS handshake and *before* the signed request is sent (httpcore's ``trace``
hook in the sync client, aiohttp's ``Fingerprint`` in the async one), the way SSH pins host
keys. `fetch_tls_fingerprint` takes the pin at enrollment.
"""

from __future__ import annotations

import functools
import hashlib
import json
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import httpx
import yarl

from kernel.agent import KILL_GRACE, LINGER, signed_headers
from kernel.exceptions import AgentError, AgentRefused, AgentUnreachable
from kernel.jsontext import loads_scrubbed

__all__ = [
    "AgentClient",
    "AgentError",
    "AgentRefused",
    "AgentUnreachable",
    "AsyncAgentClient",
    "ExecResult",
    "fetch_tls_fingerprint",
    "normalize_fingerprint",
]

DEFAULT_RUN_TIMEOUT = 600.0
# Idle pooled connections are closed before the agent's own idle limit (75 s) would.
_KEEPALIVE = 60.0
_WAIT_MARGIN = KILL_GRACE + LINGER + 30.0  # beyond the run's own timeout, for a waiting call


@dataclass
class ExecResult:
    """One execution as the agent reports it."""

    id: str
    state: str = "finished"  # running | finished | lost
    exit_code: int | None = None
    signal: int | None = None
    timed_out: bool = False
    cancelled: bool = False
    stdout: str = ""
    stderr: str = ""
    truncated: bool = False
    duration: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    reason: str = ""  # why a run is lost
    error: str = ""  # why a run could not start

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExecResult:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if (k in names and v is not None) or k == "id"})


def normalize_fingerprint(text: str) -> str:
    """'AB:CD:…' or 'abcd…' → 64 lower-case hex chars."""
    fp = text.replace(":", "").strip().lower()
    if len(fp) != 64 or any(c not in "0123456789abcdef" for c in fp):
        raise ValueError(f"not a SHA-256 fingerprint: {text!r}")
    return fp


def fetch_tls_fingerprint(url: str, timeout: float = 10.0) -> str:
    """SHA-256 (hex) of the certificate the agent at ``url`` presents; trust on first use."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError(f"not an https URL: {url!r}")
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((parts.hostname, parts.port or 443), timeout) as raw,
            ctx.wrap_socket(raw, server_hostname=parts.hostname) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError) as e:
        raise AgentUnreachable(f"{url}: {e}") from e
    if not der:
        raise AgentUnreachable(f"{url}: no certificate")
    return hashlib.sha256(der).hexdigest()


class _PinMismatch(Exception):
    pass


@functools.cache
def _tls_context(*, pinned: bool) -> ssl.SSLContext:
    """One shared context per kind: building one costs ~0.1 s, which a fan-out to hundreds of
    agents must not pay per client. A pinned agent is checked by fingerprint after the
    handshake (see _pin_error), not by a CA."""
    ctx = ssl.create_default_context()
    if pinned:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class _Base:
    def __init__(
        self, url: str, key: str, *, timeout: float = 10.0, tls_fingerprint: str | None = None
    ) -> None:
        self.url = url.rstrip("/")
        self.key = key.strip()
        self.timeout = timeout
        self.pin = normalize_fingerprint(tls_fingerprint) if tls_fingerprint else None
        self._base_path = urlsplit(self.url).path

    def _verify(self) -> ssl.SSLContext:
        return _tls_context(pinned=self.pin is not None)

    def _pin_error(self, event: str, info: dict[str, Any]) -> _PinMismatch | None:
        """After a TLS handshake: an error if the agent's certificate is not the pinned one."""
        if self.pin is None or event != "connection.start_tls.complete":
            return None
        stream = info.get("return_value")
        ssl_object = stream.get_extra_info("ssl_object") if stream is not None else None
        der = ssl_object.getpeercert(True) if ssl_object is not None else None
        seen = hashlib.sha256(der).hexdigest() if der else "none"
        if seen == self.pin:
            return None
        return _PinMismatch(f"TLS certificate fingerprint {seen} is not the pinned {self.pin}")

    def _signed(self, method: str, path: str, body: Any = None) -> tuple[dict[str, str], bytes]:
        """The request's headers (signature, content type) and body, for either client."""
        content = b"" if body is None else json.dumps(body).encode()
        headers = signed_headers(self.key, method, self._base_path + path, content)
        if content:
            headers["Content-Type"] = "application/json"
        return headers, content

    def _build(
        self, method: str, path: str, body: Any = None, read_timeout: float | None = None
    ) -> tuple[str, dict[str, str], bytes, httpx.Timeout]:
        headers, content = self._signed(method, path, body)
        timeout = httpx.Timeout(self.timeout, read=read_timeout or self.timeout)
        return self.url + path, headers, content, timeout

    @staticmethod
    def _exec_body(
        cmd: str,
        stdin: str | None,
        env: dict[str, str] | None,
        cwd: str | None,
        timeout: float | None,
        id: str | None,
        stream: bool,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"cmd": cmd}
        for name, value in (("stdin", stdin), ("env", env), ("cwd", cwd), ("timeout", timeout)):
            if value is not None:
                body[name] = value
        if id is not None:
            body["id"] = id
        if stream:
            body["stream"] = True
        return body

    @staticmethod
    def _run_wait(timeout: float | None) -> float:
        return (timeout or DEFAULT_RUN_TIMEOUT) + _WAIT_MARGIN

    @staticmethod
    def _status_path(id: str, wait: float | None = None) -> str:
        path = "/api/v2/exec/" + quote(id, safe="")
        return path if wait is None else f"{path}?wait={wait:g}"

    @staticmethod
    def _answer(status: int, raw: bytes) -> Any:
        """The JSON of an answer, or the AgentError it stands for."""
        try:
            data = loads_scrubbed(raw)
        except (ValueError, RecursionError):
            data = None
        if status >= 400:
            if isinstance(data, dict) and "error" in data:
                raise AgentRefused(status, str(data["error"]), str(data.get("msg")))
            raise AgentRefused(status, "bad_response", raw.decode("utf-8", "replace")[:200])
        if data is None:
            raise AgentRefused(status, "bad_response", "answer is not JSON")
        return data

    def _unreachable(self, exc: Exception) -> AgentUnreachable:
        if isinstance(exc, _PinMismatch):
            return AgentUnreachable(f"{self.url}: {exc}", error="tls_pin_mismatch")
        return AgentUnreachable(f"{self.url}: {type(exc).__name__}: {exc}")


class AgentClient(_Base):
    """Synchronous client; one kept-alive connection pool. Use as a context manager."""

    def __init__(
        self, url: str, key: str, *, timeout: float = 10.0, tls_fingerprint: str | None = None
    ) -> None:
        super().__init__(url, key, timeout=timeout, tls_fingerprint=tls_fingerprint)
        self._client = httpx.Client(verify=self._verify(), timeout=timeout)
        self._ext = {"trace": self._check_pin} if self.pin else {}

    def _check_pin(self, event: str, info: dict[str, Any]) -> None:
        error = self._pin_error(event, info)
        if error is not None:
            info["return_value"].close()  # raising leaves the stream to us
            raise error

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def _call(self, method: str, path: str, body: Any = None, read: float | None = None) -> Any:
        url, headers, content, timeout = self._build(method, path, body, read)
        try:
            response = self._client.request(
                method, url, content=content, headers=headers, timeout=timeout,
                extensions=self._ext,
            )  # fmt: skip
        except (httpx.TransportError, _PinMismatch) as e:
            raise self._unreachable(e) from e
        return self._answer(response.status_code, response.content)

    def exec(
        self,
        cmd: str,
        *,
        stdin: str | None = None,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
        id: str | None = None,
    ) -> ExecResult:
        """Run ``cmd`` and wait for its result (the same ``id`` again attaches, never reruns)."""
        body = self._exec_body(cmd, stdin, env, cwd, timeout, id, False)
        return ExecResult.from_json(
            self._call("POST", "/api/v2/exec", body, self._run_wait(timeout))
        )

    def stream(
        self,
        cmd: str,
        *,
        stdin: str | None = None,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
        id: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """NDJSON events as dicts: started, stdout/stderr (``data``), exit (the result)."""
        body = self._exec_body(cmd, stdin, env, cwd, timeout, id, True)
        url, headers, content, tmo = self._build(
            "POST", "/api/v2/exec", body, self._run_wait(timeout)
        )
        try:
            with self._client.stream(
                "POST", url, content=content, headers=headers, timeout=tmo, extensions=self._ext
            ) as response:
                if response.status_code >= 400:
                    self._answer(response.status_code, response.read())
                for line in response.iter_lines():
                    if line.strip():
                        yield loads_scrubbed(line)
        except (httpx.TransportError, _PinMismatch) as e:
            raise self._unreachable(e) from e

    def status(self, id: str, *, wait: float | None = None) -> ExecResult:
        """State and output so far; ``wait`` seconds (≤ 300) for it to finish first."""
        read = None if wait is None else wait + self.timeout
        return ExecResult.from_json(self._call("GET", self._status_path(id, wait), None, read))

    def cancel(self, id: str) -> ExecResult:
        """SIGTERM to the run's process group, SIGKILL after the grace; the result after."""
        read = KILL_GRACE + LINGER + 2 + self.timeout
        return ExecResult.from_json(self._call("DELETE", self._status_path(id), None, read))

    def info(self) -> dict[str, Any]:
        info: dict[str, Any] = self._call("GET", "/api/v2/info")
        return info

    def healthz(self) -> bool:
        try:
            response = self._client.get(self.url + "/healthz", extensions=self._ext)
        except (httpx.TransportError, _PinMismatch):
            return False
        return response.status_code == 200


class AsyncAgentClient(_Base):
    """Asynchronous twin of `AgentClient` (``stream`` is an async iterator), on aiohttp.

    The server's runner and poller talk to hundreds of agents through this class, so it is on
    the hot path: aiohttp costs ~0.5 ms of CPU per request where httpx's async client costs
    ~2.5 ms (bench/bench_agent.py; docs/design.md). One connection pool per agent, opened
    lazily inside the running event loop."""

    def __init__(
        self, url: str, key: str, *, timeout: float = 10.0, tls_fingerprint: str | None = None
    ) -> None:
        super().__init__(url, key, timeout=timeout, tls_fingerprint=tls_fingerprint)
        self._session: aiohttp.ClientSession | None = None
        self._ssl: ssl.SSLContext | aiohttp.Fingerprint | bool = False
        if self.url.startswith("https:"):
            self._ssl = aiohttp.Fingerprint(bytes.fromhex(self.pin)) if self.pin else self._verify()

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                ssl=self._ssl,
                keepalive_timeout=_KEEPALIVE,
                use_dns_cache=False,
            )
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=False, skip_auto_headers=("User-Agent",)
            )
        return self._session

    async def __aenter__(self) -> AsyncAgentClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _request(self, method: str, path: str, body: Any = None, read: float | None = None) -> Any:
        headers, content = self._signed(method, path, body)
        timeout = aiohttp.ClientTimeout(
            total=None, connect=self.timeout, sock_read=read or self.timeout
        )
        # encoded=True: the path goes out exactly as signed (no re-quoting by yarl)
        url = yarl.URL(self.url + path, encoded=True)
        return self._open().request(
            method, url, data=content or None, headers=headers, timeout=timeout
        )

    def _a_unreachable(self, exc: BaseException) -> AgentUnreachable:
        if isinstance(exc, aiohttp.ServerFingerprintMismatch):
            seen = exc.got.hex() if isinstance(exc.got, bytes) else "none"
            return AgentUnreachable(
                f"{self.url}: TLS certificate fingerprint {seen} is not the pinned {self.pin}",
                error="tls_pin_mismatch",
            )
        if isinstance(exc, TimeoutError):
            return AgentUnreachable(f"{self.url}: TimeoutError: no answer in time")
        return AgentUnreachable(f"{self.url}: {type(exc).__name__}: {exc}")

    async def _call(
        self, method: str, path: str, body: Any = None, read: float | None = None
    ) -> Any:
        try:
            async with self._request(method, path, body, read) as response:
                raw = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as e:
            raise self._a_unreachable(e) from e
        return self._answer(status, raw)

    async def exec(
        self,
        cmd: str,
        *,
        stdin: str | None = None,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
        id: str | None = None,
    ) -> ExecResult:
        body = self._exec_body(cmd, stdin, env, cwd, timeout, id, False)
        data = await self._call("POST", "/api/v2/exec", body, self._run_wait(timeout))
        return ExecResult.from_json(data)

    async def stream(
        self,
        cmd: str,
        *,
        stdin: str | None = None,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
        id: str | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        body = self._exec_body(cmd, stdin, env, cwd, timeout, id, True)
        try:
            async with self._request(
                "POST", "/api/v2/exec", body, self._run_wait(timeout)
            ) as response:
                if response.status >= 400:
                    self._answer(response.status, await response.read())
                # NDJSON split here: aiohttp's own line iterator refuses lines over its
                # buffer size, and an output event may be longer than that.
                pending = b""
                async for chunk in response.content.iter_any():
                    pending += chunk
                    if b"\n" not in chunk:
                        continue
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        if line.strip():
                            yield loads_scrubbed(line)
                if pending.strip():
                    yield loads_scrubbed(pending)
        except (aiohttp.ClientError, TimeoutError) as e:
            raise self._a_unreachable(e) from e

    async def status(self, id: str, *, wait: float | None = None) -> ExecResult:
        read = None if wait is None else wait + self.timeout
        return ExecResult.from_json(
            await self._call("GET", self._status_path(id, wait), None, read)
        )

    async def cancel(self, id: str) -> ExecResult:
        read = KILL_GRACE + LINGER + 2 + self.timeout
        return ExecResult.from_json(await self._call("DELETE", self._status_path(id), None, read))

    async def info(self) -> dict[str, Any]:
        info: dict[str, Any] = await self._call("GET", "/api/v2/info")
        return info

    async def healthz(self) -> bool:
        try:
            async with self._request("GET", "/healthz") as response:
                await response.read()
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

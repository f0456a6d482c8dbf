"""What both clients share: signing a request, timeouts, reading an answer or the error it
stands for."""

from __future__ import annotations

import hashlib
import json
import ssl
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from kernel.agent import KILL_GRACE, LINGER, signed_headers
from kernel.agent_client.tls import _PinMismatch, _tls_context, normalize_fingerprint
from kernel.exceptions import AgentRefused, AgentUnreachable
from kernel.jsontext import loads_scrubbed

DEFAULT_RUN_TIMEOUT = 600.0
# Idle pooled connections are closed before the agent's own idle limit (75 s) would.
KEEPALIVE = 60.0
_WAIT_MARGIN = KILL_GRACE + LINGER + 30.0  # beyond the run's own timeout, for a waiting call


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

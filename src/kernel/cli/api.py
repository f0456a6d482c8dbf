"""The REST API as the CLI uses it: JSON requests with the token, errors as CliErrors, and a
job's live events (SSE) with reconnection."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator

from .errors import ApiError, AuthError, ServerUnreachable, UsageError
from .http1 import Connection, Response, Upload, Url
from .sse import SseParser

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

STREAM_READ_TIMEOUT = 75.0  # the server sends a keep-alive every 15 s (SSE_KEEPALIVE)
STREAM_RETRIES = 5


def quote_path(part: str) -> str:
    """Percent-encode one path segment (server and service names are already plain)."""
    safe = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~@"
    return "".join(c if c in safe else "".join(f"%{b:02X}" for b in c.encode()) for c in part)


def encode_json(body: object) -> bytes:
    try:
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except UnicodeEncodeError:
        # sys.argv holds undecodable bytes as lone surrogates (PEP 383); the server cannot
        # store or run them, so say so here instead of sending them.
        raise UsageError(
            "an argument or file is not valid UTF-8 text (the server only takes UTF-8)"
        ) from None


def default_timeout() -> float:
    """Seconds to wait for an answer: ``KERNEL_TIMEOUT``, default 60 (adding a server waits
    for its agent's check)."""
    raw = os.environ.get("KERNEL_TIMEOUT")
    if not raw:
        return 60.0
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value < 1e6:
        raise UsageError(f"KERNEL_TIMEOUT must be a positive number of seconds, not {raw!r}")
    return value


class Api:
    def __init__(self, url: Url, token: str | None, *, timeout: float | None = None) -> None:
        self.url = url
        self.token = token
        self.timeout = default_timeout() if timeout is None else timeout
        self.conn = Connection(url)

    def close(self) -> None:
        self.conn.close()

    def _headers(self, body: bool) -> dict[str, str]:
        h = {"Accept": "application/json"}
        if self.token:
            h["Authorization"] = f"Bearer {self.token}"
        if body:
            h["Content-Type"] = "application/json"
        return h

    def call(self, method: str, path: str, body: object = None) -> Any:
        data = None if body is None else encode_json(body)
        resp = self.conn.request(
            method, path, self._headers(data is not None), data, read_timeout=self.timeout
        )
        return self._answer(resp)

    def upload(self, path: str, upload: Upload) -> Any:
        """POST a file's bytes as the body, sent in chunks; the JSON answer."""
        headers = {**self._headers(False), "Content-Type": "application/octet-stream"}
        resp = self.conn.request("POST", path, headers, upload, read_timeout=self.timeout)
        return self._answer(resp)

    def get_bytes(self, path: str, limit: int) -> tuple[bytes, dict[str, str]]:
        """GET an answer that is bytes (a fetched file), at most ``limit`` of them."""
        headers = {**self._headers(False), "Accept": "application/octet-stream"}
        resp = self.conn.request("GET", path, headers, read_timeout=self.timeout)
        raw = resp.read(limit)
        if resp.status >= 400:
            raise self.error(resp, raw)
        return raw, resp.headers

    def _answer(self, resp: Response) -> Any:
        raw = resp.read()
        if resp.status >= 400:
            raise self.error(resp, raw)
        if 300 <= resp.status < 400:
            where = resp.headers.get("location", "elsewhere")[:200]
            raise ServerUnreachable(
                f"{self.url.base} redirects to {where}; use that URL (e.g. https://)"
            )
        try:
            return json.loads(raw.decode("utf-8")) if raw else None
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise ServerUnreachable(
                f"{self.url.base} answered {resp.status} with something that is not JSON; "
                "is it a Kernel server?"
            ) from None

    def get(self, path: str) -> Any:
        return self.call("GET", path)

    def servers(self, query: str = "") -> dict[str, Any]:
        """``GET /api/v1/servers?QUERY``, every page of it, as one answer."""
        answer = self.pages("/api/v1/servers", "servers", query)
        return {"servers": answer["servers"], "total": answer["total"]}

    def pages(self, path: str, key: str, query: str = "") -> dict[str, Any]:
        """A paged list (``{KEY: [...], next}``), every page of it, as one answer: the last
        page's other fields (no ``next``), with all of KEY and their count as ``total``."""
        path += "?" + (query + "&" if query else "")
        answer = self.get(path + "limit=1000")
        items = list(answer.get(key, []))
        while answer.get("next"):
            answer = self.get(path + "limit=1000&after=" + quote_path(answer["next"]))
            items += answer.get(key, [])
        rest = {k: v for k, v in answer.items() if k != "next"}
        return {**rest, key: items, "total": len(items)}

    def post(self, path: str, body: object = None) -> Any:
        return self.call("POST", path, {} if body is None else body)

    def patch(self, path: str, body: object) -> Any:
        return self.call("PATCH", path, body)

    def delete(self, path: str) -> Any:
        return self.call("DELETE", path)

    def error(self, resp: Response, raw: bytes) -> Exception:
        """The CliError for an error answer (Kernel's ``{error, message}`` or anything else)."""
        slug, message = "", ""
        try:
            body = json.loads(raw.decode("utf-8"))
            if isinstance(body, dict) and "message" in body:  # Kernel's {error, message}
                slug = str(body.get("error") or "")
                message = str(body.get("message") or "") or slug
        except (UnicodeDecodeError, ValueError, RecursionError):
            pass
        status = resp.status
        if status == 404 and message.startswith("The requested URL was not found"):
            return ServerUnreachable(
                f"{self.url.base} has no such API endpoint ({resp.reason}); give the server's "
                "base URL, without /api/v1"
            )
        if not slug:
            first = raw.decode("utf-8", "replace").strip().split("\n", 1)[0][:120]
            what = f"{status} {resp.reason}".strip()
            return ServerUnreachable(
                f"{self.url.base} answered {what}"
                + (f" ({first})" if first else "")
                + "; is it a Kernel server?"
            )
        if status == 401:
            return AuthError(
                status,
                slug,
                f"the server refused the token ({message}); log in again: "
                f"kernel login {self.url.base}",
            )
        if status == 403:
            return AuthError(status, slug, f"forbidden: {message}")
        if status >= 500 and slug != "agent_unreachable":
            return ServerUnreachable(f"the server failed ({status} {slug}): {message}")
        return ApiError(status, slug, message)

    # -- live events -------------------------------------------------------------------------
    def events(self, job_id: int) -> Iterator[tuple[str, dict[str, Any]]]:
        """``(type, data)`` for each event of a job until ``end``. A broken stream is reopened
        with ``Last-Event-ID`` (the server then continues, or starts again with a snapshot)."""
        parser = SseParser()
        failures = 0
        while True:
            headers = self._headers(False)
            headers["Accept"] = "text/event-stream"
            if parser.last_id:
                headers["Last-Event-ID"] = parser.last_id
            try:
                resp = self.conn.request(
                    "GET",
                    f"/api/v1/jobs/{job_id}/events",
                    headers,
                    read_timeout=STREAM_READ_TIMEOUT,
                )
                if resp.status >= 400:
                    err = self.error(resp, resp.read())
                    if resp.status == 429 and failures < STREAM_RETRIES:
                        raise ServerUnreachable(str(err))  # too many streams open: retry later
                    raise err
                for chunk in resp.iter_body():
                    try:
                        batch = parser.feed(chunk)
                    except ValueError as e:
                        raise ServerUnreachable(f"the event stream of job {job_id}: {e}") from None
                    for ev in batch:
                        if ev.type in ("message", ""):
                            continue
                        failures = 0
                        try:
                            data = json.loads(ev.data)
                        except (ValueError, RecursionError):
                            continue
                        if isinstance(data, dict):
                            yield ev.type, data
                            if ev.type == "end":
                                return
            except ServerUnreachable:
                failures += 1
                if failures > STREAM_RETRIES:
                    raise
                self.conn.close()
                time.sleep(min(0.2 * 2**failures, 3.0))
                continue
            # The stream ended without an "end" event (server restarting): reopen it.
            failures += 1
            if failures > STREAM_RETRIES:
                raise ServerUnreachable(
                    f"the event stream of job {job_id} keeps closing early; "
                    f"see `kernel jobs show {job_id}`"
                )
            time.sleep(min(0.2 * 2**failures, 3.0))

"""A small HTTP/1.1 client for talking to agents, on asyncio protocols: the server's hot path.

The runner and the poller send tens of thousands of requests a minute to agents, one request
at a time per connection, over kept-alive connections. aiohttp cost ~0.15-0.3 ms of CPU per
request there (its request and response objects, header multidicts, URL objects, a timer
re-armed on every read); at 10 000 hosts that was half of the runner's CPU. This client does
only what the agent's protocol needs: a request written in one piece, a response head parsed
once, a body by Content-Length, chunked, or up to the close, streamed to the reader with
flow control, one inactivity timer per request armed once, and a pool of idle connections
per agent. Anything else an agent answers is an error (`WireError`), never a hang or a crash.

Not a general HTTP client: no redirects, cookies, proxies, compression, or request bodies
larger than fit in memory (they are JSON documents of a few KiB). No cap on connections per
agent: the runner's and the poller's concurrency bound them (JOB_CONCURRENCY 128 and
STATUS_CONCURRENCY 64 by default, under the agent's own ``max_connections`` of 256).
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import ssl
import time
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any

from kernel.agent_client.http1 import (
    MAX_HEAD,
    ChunkedBody,
    PinMismatch,
    Target,
    WireError,
    parse_head,
)
from kernel.agent_client.tls import _tls_context

MAX_BODY = 64 * 1024 * 1024  # bytes of a body read whole (`Response.read`); streams are not held
HIGH_WATER = 1024 * 1024  # buffered body bytes beyond which the socket is not read
KEEPALIVE = 60.0  # an idle connection is closed after this (the agent's own limit is 75 s)
SWEEP_EVERY = 10.0  # seconds between looks for expired idle connections
MAX_INTERIM = 10  # 1xx answers before the real one at most


class Response:
    """A response being read: ``status`` and ``headers`` once the head has arrived; the body
    with `read` (whole) or `chunks` (as it comes). Use it as an async context manager: leaving
    it before the body's end closes the connection (it cannot carry another request)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self.status = 0
        self.headers: dict[str, str] = {}
        self._pieces: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._ended = False  # the whole body has arrived
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False

    async def __aenter__(self) -> Response:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Done with it: the connection goes back to its pool if the body was read to its
        end, otherwise it is closed."""
        if self._closed:
            return
        self._closed = True
        if self._ended and not self._pieces and self._error is None:
            self._conn.release()
        else:
            self._conn.abort()

    # -- fed by the connection ------------------------------------------------------------
    def _feed(self, data: bytes) -> None:
        self._pieces.append(data)
        self._buffered += len(data)
        if self._buffered > HIGH_WATER:
            self._conn.pause()
        self._wake()

    def _end(self) -> None:
        self._ended = True
        self._wake()

    def _fail(self, exc: BaseException) -> None:
        if self._error is None and not self._ended:
            self._error = exc
        self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    # -- read by the caller ---------------------------------------------------------------
    async def _wait(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body's bytes as they arrive."""
        while True:
            if self._pieces:
                data = self._pieces.popleft()
                self._buffered -= len(data)
                if self._buffered <= HIGH_WATER // 2:
                    self._conn.resume()
                yield data
            elif self._error is not None:
                raise self._error
            elif self._ended:
                return
            else:
                await self._wait()

    async def read(self, limit: int = MAX_BODY) -> bytes:
        """The whole body (at most ``limit`` bytes, else `WireError`)."""
        parts: list[bytes] = []
        size = 0
        async for data in self.chunks():
            size += len(data)
            if size > limit:
                raise WireError(f"answer larger than {limit} bytes")
            parts.append(data)
        return b"".join(parts)


class Connection(asyncio.Protocol):
    """One kept-alive connection to an agent, one request at a time."""

    def __init__(self, pool: Pool, key: Any) -> None:
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.answered = False  # a byte of the current response has arrived
        self._response: Response | None = None
        self._head_waiter: asyncio.Future[None] | None = None
        self._buf = bytearray()
        self._mode = ""  # "head", then "length" | "chunked" | "close", then "" (done)
        self._left = 0  # bytes left of the body ("length")
        self._chunks: ChunkedBody | None = None  # "chunked"
        self._keep = False  # the connection may carry another request after this one
        self._paused = False
        self._timer: asyncio.TimerHandle | None = None
        self._timeout = 0.0
        self._last = 0.0
        self._interim = 0  # 1xx heads before this response's own

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._cancel_timer()
        if self._mode == "close" and self._response is not None and exc is None:
            self._mode = ""
            self._response._end()
            return
        self._broken(WireError(f"connection lost: {exc}" if exc else "connection closed"))

    def data_received(self, data: bytes) -> None:
        self.answered = True
        self._last = time.monotonic()
        try:
            self._data(data)
        except Exception as e:  # noqa: BLE001 - WireError, or a bug here: an error, not a crash
            self._broken(e if isinstance(e, WireError) else WireError(f"unreadable answer: {e}"))
            self.abort()

    def pause(self) -> None:
        if not self._paused and self.transport is not None and not self.closed:
            self._paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()

    # -- a request ---------------------------------------------------------------------------
    async def send(self, data: bytes, timeout: float) -> Response:
        """Write a request and wait for its response's head (``timeout``: the longest the
        agent may stay silent, from now to the body's end)."""
        assert self.transport is not None and self._mode == ""
        response = Response(self)
        self._response = response
        self._buf.clear()
        self._mode = "head"
        self._interim = 0
        self.answered = False
        self._timeout = timeout
        self._last = time.monotonic()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(timeout, self._expire)
        self._head_waiter = loop.create_future()
        self.transport.write(data)
        try:
            await self._head_waiter
        except BaseException:
            self.abort()
            raise
        finally:
            self._head_waiter = None
        return response

    def release(self) -> None:
        self._response = None
        if self.closed or not self._keep or self._mode != "" or self._buf:
            self.abort()
            return
        self.idle_since = time.monotonic()
        self.pool._put(self)

    def abort(self) -> None:
        self._cancel_timer()
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.abort()
        self._broken(WireError("connection closed"))

    # -- inside ----------------------------------------------------------------------------
    def _expire(self) -> None:
        self._timer = None
        if self._mode == "":
            return
        quiet = time.monotonic() - self._last
        if quiet < self._timeout:  # data came meanwhile: wait the rest, armed once more
            self._timer = asyncio.get_running_loop().call_later(self._timeout - quiet, self._expire)
            return
        self._broken(TimeoutError("no answer in time"))
        self.abort()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _broken(self, exc: BaseException) -> None:
        mode, self._mode = self._mode, ""
        if not mode:
            return
        w = self._head_waiter
        if w is not None and not w.done():
            w.set_exception(exc)
        elif self._response is not None:
            self._response._fail(exc)

    def _data(self, data: bytes) -> None:
        while True:  # a loop, not recursion: a packet may hold many interim heads
            if self._mode == "":
                if data:
                    raise WireError("data from the agent when no request was waiting")
                return
            if self._mode != "head":
                break
            self._buf += data
            end = self._buf.find(b"\r\n\r\n")
            if end < 0 or end > MAX_HEAD:
                if end > MAX_HEAD or len(self._buf) > MAX_HEAD:
                    raise WireError(f"response head larger than {MAX_HEAD} bytes")
                return
            head, data = bytes(self._buf[:end]), bytes(self._buf[end + 4 :])
            self._buf.clear()
            self._head(head)
            if not data:
                return
        assert self._response is not None
        if self._mode == "length":
            if len(data) > self._left:
                raise WireError("more data than the Content-Length said")
            self._left -= len(data)
            if data:
                self._response._feed(data)
            if self._left == 0:
                self._done()
        elif self._mode == "close":
            self._response._feed(data)
        else:
            self._buf += data
            self._dechunk()

    def _head(self, head: bytes) -> None:
        status, http10, headers = parse_head(head)
        if 100 <= status < 200:  # an interim answer: the real one follows
            self._interim += 1
            if self._interim > MAX_INTERIM:
                raise WireError(f"more than {MAX_INTERIM} interim answers")
            return
        response = self._response
        assert response is not None
        response.status, response.headers = status, headers
        conn = headers.get("connection", "").lower()
        self._keep = "close" not in conn and (not http10 or "keep-alive" in conn)
        te = headers.get("transfer-encoding")
        length = headers.get("content-length")
        if te is not None:
            if te.lower() != "chunked" or length is not None:
                raise WireError(f"unsupported transfer encoding {te[:40]!r}")
            self._mode, self._chunks = "chunked", ChunkedBody()
        elif length is not None:
            if not (length.isascii() and length.isdigit()) or len(length) > 15:
                raise WireError(f"bad Content-Length {length[:20]!r}")
            self._mode, self._left = "length", int(length)
        elif status in (204, 304):
            self._mode, self._left = "length", 0
        else:
            self._mode, self._keep = "close", False
        w = self._head_waiter
        if w is not None and not w.done():
            w.set_result(None)
        if self._mode == "length" and self._left == 0:
            self._done()

    def _dechunk(self) -> None:
        assert self._response is not None and self._chunks is not None
        pieces, ended = self._chunks.feed(self._buf)
        for data in pieces:
            self._response._feed(data)
        if ended:
            self._done()
            if self._buf:
                raise WireError("data after the end of the response")

    def _done(self) -> None:
        self._mode = ""
        self._cancel_timer()
        if self._response is not None:
            self._response._end()


class Pool:
    """Kept-alive connections to many agents, for one event loop: idle ones by agent, taken
    newest first; closed when idle for ``keepalive`` seconds or when the agent closes them."""

    def __init__(self, connect_timeout: float = 10.0, keepalive: float = KEEPALIVE) -> None:
        self.connect_timeout = connect_timeout
        self.keepalive = keepalive
        self._idle: dict[Any, list[Connection]] = {}
        self._swept = time.monotonic()
        self.closed = False

    async def request(
        self,
        target: Target,
        build: Callable[[], bytes],
        *,
        timeout: float,
        connect_timeout: float | None = None,
    ) -> Response:
        """Send one request (``build()``: its bytes, from `encode_request`) and wait for the
        head of its response. A kept-alive connection that the agent closed meanwhile (it
        broke before any byte of an answer) is retried once on a new one, the request built
        anew (a fresh nonce): every request of the agent's protocol may be sent twice (an
        exec carries its id, and the agent runs an id once)."""
        if self.closed:
            raise WireError("the connection pool is closed")
        data = build()
        conn = self._take(target.key)
        if conn is not None:
            try:
                return await conn.send(data, timeout)
            except WireError:
                if conn.answered:
                    raise
                data = build()
        conn = await self._open(target, connect_timeout or self.connect_timeout)
        return await conn.send(data, timeout)

    def _take(self, key: Any) -> Connection | None:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < self.keepalive:
                return conn
            conn.abort()
        return None

    def _put(self, conn: Connection) -> None:
        if self.closed:
            conn.abort()
            return
        self._idle.setdefault(conn.key, []).append(conn)
        if conn.idle_since - self._swept > SWEEP_EVERY:
            self._sweep(conn.idle_since)

    def _sweep(self, now: float) -> None:
        self._swept = now
        for key in list(self._idle):
            keep = []
            for conn in self._idle[key]:
                if conn.closed or now - conn.idle_since >= self.keepalive:
                    conn.abort()
                else:
                    keep.append(conn)
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]

    async def _open(self, target: Target, timeout: float) -> Connection:
        loop = asyncio.get_running_loop()
        context: ssl.SSLContext | None = None
        if target.tls:
            context = _tls_context(pinned=target.pin is not None)
        async with asyncio.timeout(timeout):
            _, conn = await loop.create_connection(
                lambda: Connection(self, target.key),
                target.host,
                target.port,
                ssl=context,
                server_hostname=target.host if context is not None else None,
            )
        if target.pin is not None:
            assert conn.transport is not None
            tls = conn.transport.get_extra_info("ssl_object")
            der = tls.getpeercert(True) if tls is not None else None
            seen = hashlib.sha256(der).hexdigest() if der else "none"
            if seen != target.pin:
                conn.abort()
                raise PinMismatch(seen, target.pin)
        return conn

    async def close(self) -> None:
        """Close every idle connection; those in use close when their response is done."""
        self.closed = True
        for conns in self._idle.values():
            for conn in conns:
                conn.abort()
        self._idle.clear()
        await asyncio.sleep(0)

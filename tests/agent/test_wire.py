"""kernel.agent_client.wire — the server's HTTP/1.1 client for agents — against scripted
servers that answer well, slowly, in pieces, or with garbage (a real agent: test_client.py).

A scripted server is a listening socket and a thread per connection running the test's
script; it records what it was sent and how many connections it accepted."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from kernel.agent_client import AgentRefused, AgentUnreachable, AsyncAgentClient, http1, wire
from kernel.agent_client.http1 import ChunkedBody, Target, WireError, encode_request, parse_head
from kernel.agent_client.wire import Pool

Script = Callable[[socket.socket, int], None]


class Scripted:
    def __init__(self, script: Script) -> None:
        self.script = script
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.05)  # accept() looks at _stop this often
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.accepted = 0
        self.requests: list[bytes] = []
        self._threads: list[threading.Thread] = []
        self._stop = False
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            n = self.accepted
            self.accepted += 1
            t = threading.Thread(target=self._serve, args=(conn, n), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, conn: socket.socket, n: int) -> None:
        with conn:
            conn.settimeout(10)
            try:
                self.script(conn, n)
            except OSError:
                pass

    def close(self) -> None:
        self._stop = True
        self._acceptor.join(5)
        self.sock.close()
        for t in self._threads:
            t.join(5)


def read_request(conn: socket.socket, log: list[bytes] | None = None) -> bytes:
    """One request (head and Content-Length body) from the client; b"" when it closed."""
    data = b""
    while b"\r\n\r\n" not in data:
        got = conn.recv(65536)
        if not got:
            return b""
        data += got
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        body += conn.recv(65536)
    if log is not None:
        log.append(head + b"\r\n\r\n" + body)
    return head


def answer(body: bytes = b'{"ok": true}', extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s"
        % (len(body), extra, body)
    )


@pytest.fixture
def serve() -> Iterator[Callable[[Script], Scripted]]:
    made: list[Scripted] = []

    def make(script: Script) -> Scripted:
        s = Scripted(script)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


async def fetch(pool: Pool, url: str, path: str = "/x", timeout: float = 5.0) -> tuple[int, bytes]:
    t = Target(url)

    def build() -> bytes:
        return encode_request("GET", path, t.host_header, {"X-A": "1"}, b"")

    async with await pool.request(t, build, timeout=timeout) as r:
        return r.status, await r.read()


def run(coro_fn: Callable[[Pool], object], keepalive: float = wire.KEEPALIVE) -> object:
    async def main() -> object:
        pool = Pool(5.0, keepalive)
        try:
            return await coro_fn(pool)  # type: ignore[misc]
        finally:
            await pool.close()

    return asyncio.run(main())


# -- pure --------------------------------------------------------------------------------------


def test_encode_request() -> None:
    raw = encode_request("POST", "/api/v2/exec", "127.0.0.1:8001", {"X-K": "v"}, b"{}")
    assert raw == (
        b"POST /api/v2/exec HTTP/1.1\r\nHost: 127.0.0.1:8001\r\nX-K: v\r\n"
        b"Content-Length: 2\r\n\r\n{}"
    )
    assert b"Content-Length" not in encode_request("GET", "/healthz", "h", {}, b"")
    for bad in ({"X": "a\r\nInjected: 1"}, {"X\nY": "a"}):
        with pytest.raises(ValueError):
            encode_request("GET", "/", "h", bad, b"")
    for path in ("relative", "/a b", "/a\r\nX: y"):
        with pytest.raises(ValueError):
            encode_request("GET", path, "h", {}, b"")


def test_target() -> None:
    t = Target("https://[::1]:8001", "ab" * 32)
    assert (t.tls, t.host, t.port, t.host_header, t.pin) == (
        True,
        "::1",
        8001,
        "[::1]:8001",
        "ab" * 32,
    )
    assert Target("http://h").host_header == "h" and Target("http://h").port == 80
    assert Target("http://h", "ab" * 32).pin is None  # a pin means nothing without TLS
    with pytest.raises(ValueError):
        Target("ftp://h")


def test_parse_head() -> None:
    status, http10, headers = parse_head(
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\nX-A: 1\r\nx-a: 2\r\nEmpty:"
    )
    assert (status, http10) == (404, False)
    assert headers == {"content-length": "3", "x-a": "1, 2", "empty": ""}
    assert parse_head(b"HTTP/1.0 200")[:2] == (200, True)  # no reason phrase
    bad = [
        b"", b"garbage", b"HTTP/2 200 OK", b"HTTP/1.1 2000 OK", b"HTTP/1.1 abc OK",
        b"HTTP/1.1 200 OK\r\nno colon", b"HTTP/1.1 200 OK\r\n : v", b"HTTP/1.1 200 OK\r\nA B: v",
        b"HTTP/1.1 200 OK\r\n" + b"\r\n".join(b"H%d: v" % i for i in range(http1.MAX_HEADERS + 1)),
        b"\xff\xfe\x00 200 OK",
    ]  # fmt: skip
    for head in bad:
        with pytest.raises(WireError):
            parse_head(head)


def test_chunked_body_fed_in_any_pieces() -> None:
    raw = b"3;x=1\r\nabc\r\n10\r\n" + b"d" * 16 + b"\r\n0\r\nTrailer: 1\r\n\r\n"
    for step in (1, 2, 5, len(raw)):
        body, buf, got, ended = ChunkedBody(), bytearray(), b"", False
        for i in range(0, len(raw), step):
            buf += raw[i : i + step]
            pieces, ended = body.feed(buf)
            got += b"".join(pieces)
        assert (got, ended, bytes(buf)) == (b"abc" + b"d" * 16, True, b""), step
    for bad in (b"zz\r\n", b"-1\r\n", b"\r\n", b"1" * 16 + b"\r\n", b"2\r\nabXY", b"9" * 2000):
        with pytest.raises(WireError):
            ChunkedBody().feed(bytearray(bad))


# -- against scripted servers ----------------------------------------------------------------


def test_kept_alive_connection_is_reused(serve) -> None:
    def script(conn: socket.socket, n: int) -> None:
        while read_request(conn, srv.requests):
            conn.sendall(answer(b"%d" % len(srv.requests)))

    srv = serve(script)

    async def go(pool: Pool) -> list[tuple[int, bytes]]:
        return [await fetch(pool, srv.url) for _ in range(5)]

    assert run(go) == [(200, b"%d" % i) for i in range(1, 6)]
    assert srv.accepted == 1
    assert srv.requests[0].startswith(b"GET /x HTTP/1.1\r\nHost: 127.0.0.1:")


def test_answers_in_pieces_byte_by_byte(serve) -> None:
    """Chunked with extensions and trailers, split at every byte: the same body."""
    body = b'{"event": "started"}\n' * 3
    chunks = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(body[i : i + 7]), body[i : i + 7])
                      for i in range(0, len(body), 7))  # fmt: skip
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\nT: x\r\n\r\n"

    def script(conn: socket.socket, n: int) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while read_request(conn):
            for i in range(len(raw)):
                conn.sendall(raw[i : i + 1])
                time.sleep(0.0005)

    srv = serve(script)

    async def go(pool: Pool) -> list[tuple[int, bytes]]:
        return [await fetch(pool, srv.url) for _ in range(2)]

    assert run(go) == [(200, body)] * 2
    assert srv.accepted == 1  # a chunked answer read to its end leaves the connection usable


def test_body_up_to_the_close_and_connection_close(serve) -> None:
    def script(conn: socket.socket, n: int) -> None:
        read_request(conn)
        if n == 0:
            conn.sendall(b"HTTP/1.0 200 OK\r\n\r\nuntil the end")
        else:
            conn.sendall(answer(b"closing", b"Connection: close\r\n"))

    srv = serve(script)

    async def go(pool: Pool) -> list[tuple[int, bytes]]:
        return [await fetch(pool, srv.url) for _ in range(3)]

    assert run(go) == [(200, b"until the end"), (200, b"closing"), (200, b"closing")]
    assert srv.accepted == 3  # neither kind of answer leaves a reusable connection


def test_interim_answer_then_the_real_one(serve) -> None:
    def script(conn: socket.socket, n: int) -> None:
        read_request(conn)
        conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n" + answer(b"real"))

    srv = serve(script)
    assert run(lambda pool: fetch(pool, srv.url)) == (200, b"real")


@pytest.mark.parametrize(
    "raw",
    [
        b"garbage\r\n\r\n",
        b"SSH-2.0-OpenSSH_9.2\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)) * 4,  # TLS hello
        b"HTTP/1.1 200 OK\r\nX: " + b"a" * (http1.MAX_HEAD + 10),  # endless head
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXX0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1" * 2000,
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nabc",  # more than it said
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",  # then the connection closes
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab",  # cut in a chunk
        b"",  # closed at once
        b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\nab",  # a digit, but not ASCII
        b"HTTP/1.1 100 Continue\r\n\r\n" * 5000,  # interim answers without end
    ],
)
def test_garbage_is_an_error_not_a_hang(serve, raw: bytes) -> None:
    def script(conn: socket.socket, n: int) -> None:
        read_request(conn)
        conn.sendall(raw)
        conn.shutdown(socket.SHUT_WR)
        time.sleep(0.2)

    srv = serve(script)

    async def go(pool: Pool) -> None:
        async with asyncio.timeout(5):  # an error well before this
            with pytest.raises(WireError):
                await fetch(pool, srv.url)

    run(go)


def test_garbage_through_the_client_is_unreachable_or_refused(serve) -> None:
    """What the runner sees: AgentUnreachable or AgentRefused with a reason — never another
    exception — for a head that is not HTTP, a body that is not JSON or not text, JSON too
    deep to read; and a lone surrogate escape is scrubbed, not passed on."""
    bodies = [b"\xff\xfe\x00\x01", b"{not json", b"[" * 100000, b'{"a": "\\ud800"}\n']

    def script(conn: socket.socket, n: int) -> None:
        read_request(conn)
        if n == 0:
            conn.sendall(b"\x00\x01garbage\r\n\r\n")
        else:
            conn.sendall(answer(bodies[n - 1], b"Connection: close\r\n"))

    srv = serve(script)

    async def main() -> None:
        async with AsyncAgentClient(srv.url, "ab" * 32, timeout=5) as c:
            with pytest.raises(AgentUnreachable):
                await c.info()
            for _ in range(3):
                with pytest.raises(AgentRefused) as e:
                    await c.info()
                assert e.value.error == "bad_response"
            assert [e async for e in c.stream("true")] == [{"a": "\ufffd"}]

    asyncio.run(main())


def test_a_silent_agent_times_out(serve) -> None:
    def script(conn: socket.socket, n: int) -> None:
        read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")  # then nothing
        time.sleep(3)

    srv = serve(script)

    async def go(pool: Pool) -> float:
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            await fetch(pool, srv.url, timeout=0.5)
        return time.monotonic() - t0

    took = run(go)
    assert isinstance(took, float) and 0.4 < took < 2.5


def test_a_slow_but_steady_answer_is_not_cut(serve) -> None:
    """The timeout is of silence, not of the whole answer: a byte every 0.2 s for 1.5 s
    passes a 0.5 s timeout."""

    def script(conn: socket.socket, n: int) -> None:
        read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n")
        for _ in range(8):
            time.sleep(0.2)
            conn.sendall(b"x")

    srv = serve(script)
    assert run(lambda pool: fetch(pool, srv.url, timeout=0.5)) == (200, b"x" * 8)


def test_connection_closed_while_idle_is_not_used(serve) -> None:
    """An agent that closed a kept-alive connection (restart, idle limit): the next request
    goes on a new connection."""

    def script(conn: socket.socket, n: int) -> None:
        read_request(conn)
        conn.sendall(answer(b"%d" % n))  # and close

    srv = serve(script)

    async def go(pool: Pool) -> list[tuple[int, bytes]]:
        first = await fetch(pool, srv.url)
        await asyncio.sleep(0.2)  # the close arrives
        return [first, await fetch(pool, srv.url)]

    assert run(go) == [(200, b"0"), (200, b"1")]


def test_connection_closed_as_a_request_arrives_is_retried_once(serve) -> None:
    """The race the case above does not see: the agent closes a kept-alive connection just as
    the next request arrives, without a byte of an answer. The request is sent again on a
    new connection, built anew (a fresh signature and nonce)."""
    built: list[int] = []

    def script(conn: socket.socket, n: int) -> None:
        read_request(conn, srv.requests)
        conn.sendall(answer(b"%d" % n))
        if n == 0:
            read_request(conn, srv.requests)  # and close without answering

    srv = serve(script)

    async def go(pool: Pool) -> list[tuple[int, bytes]]:
        t = Target(srv.url)

        def build() -> bytes:
            built.append(1)
            return encode_request("GET", f"/n{len(built)}", t.host_header, {}, b"")

        out = []
        for _ in range(2):
            async with await pool.request(t, build, timeout=5) as r:
                out.append((r.status, await r.read()))
        return out

    assert run(go) == [(200, b"0"), (200, b"1")]
    assert [r.split(b" ")[1] for r in srv.requests] == [b"/n1", b"/n2", b"/n3"]


def test_dead_agent_after_the_request_is_not_retried(serve) -> None:
    """The agent read the request and broke after answering part of it: that is the
    caller's error (it may have run), not a silent retry."""

    def script(conn: socket.socket, n: int) -> None:
        read_request(conn, srv.requests)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab")

    srv = serve(script)

    async def go(pool: Pool) -> None:
        with pytest.raises(WireError):
            await fetch(pool, srv.url)

    run(go)
    assert len(srv.requests) == 1


def test_a_url_that_is_not_http_is_unreachable_not_a_crash() -> None:
    async def main() -> None:
        for url in ("ftp://127.0.0.1:1", "http://", "not a url"):
            async with AsyncAgentClient(url, "ab" * 32, timeout=1) as c:
                with pytest.raises(AgentUnreachable):
                    await c.info()
                assert not await c.healthz()

    asyncio.run(main())


def test_refused_connection_and_timeouts_of_connecting() -> None:
    port = socket.create_server(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{port.getsockname()[1]}"
    port.close()

    async def go(pool: Pool) -> None:
        with pytest.raises(OSError):
            await fetch(pool, url)

    run(go)


def test_large_stream_with_a_slow_reader(serve) -> None:
    """5 MiB streamed to a reader that takes its time: reading pauses (the buffer stays
    bounded) and resumes, and every byte arrives in order."""
    size = 5 * 1024 * 1024
    data = bytes(i % 251 for i in range(size))

    def script(conn: socket.socket, n: int) -> None:
        read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + data)

    srv = serve(script)

    async def go(pool: Pool) -> None:
        t = Target(srv.url)
        got = bytearray()
        most = 0

        def build() -> bytes:
            return encode_request("GET", "/", t.host_header, {}, b"")

        async with await pool.request(t, build, timeout=10) as r:
            async for piece in r.chunks():
                got += piece
                most = max(most, r._buffered)
                await asyncio.sleep(0.001)
        assert bytes(got) == data
        assert most <= wire.HIGH_WATER + 1024 * 1024  # one read past the mark at most

    run(go)


def test_a_body_larger_than_the_limit_is_refused(serve) -> None:
    def script(conn: socket.socket, n: int) -> None:
        read_request(conn)
        conn.sendall(answer(b"x" * 5000))

    srv = serve(script)

    async def go(pool: Pool) -> None:
        t = Target(srv.url)
        async with await pool.request(
            t, lambda: encode_request("GET", "/", t.host_header, {}, b""), timeout=5
        ) as r:
            with pytest.raises(WireError):
                await r.read(limit=4096)

    run(go)


def test_an_abandoned_answer_closes_its_connection(serve) -> None:
    def script(conn: socket.socket, n: int) -> None:
        while read_request(conn):
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nabc")
            time.sleep(0.3)
            conn.sendall(b"def")

    srv = serve(script)

    async def go(pool: Pool) -> tuple[int, bytes]:
        t = Target(srv.url)
        async with await pool.request(
            t, lambda: encode_request("GET", "/", t.host_header, {}, b""), timeout=5
        ) as r:
            async for _ in r.chunks():
                break  # the rest is not read: this connection cannot be reused
        return await fetch(pool, srv.url)

    assert run(go) == (200, b"abcdef")
    assert srv.accepted == 2


def test_cancelled_caller_closes_the_connection(serve) -> None:
    def script(conn: socket.socket, n: int) -> None:
        while read_request(conn):
            time.sleep(0.5 if n == 0 else 0)
            conn.sendall(answer(b"%d" % n))

    srv = serve(script)

    async def go(pool: Pool) -> tuple[int, bytes]:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await fetch(pool, srv.url)
        return await fetch(pool, srv.url)

    assert run(go) == (200, b"1")  # the late answer on the first connection is not read


def test_idle_connections_expire(serve) -> None:
    def script(conn: socket.socket, n: int) -> None:
        while read_request(conn):
            conn.sendall(answer())

    srv = serve(script)

    async def go(pool: Pool) -> None:
        await fetch(pool, srv.url)
        await asyncio.sleep(0.3)
        await fetch(pool, srv.url)

    run(go, keepalive=0.2)
    assert srv.accepted == 2

"""A small HTTP/1.1 client on the bare socket module, because start-up is the product.

``import http.client`` costs ~20 ms on a 2-core VM (it pulls in ``email.parser`` and ``ssl``),
``import socket`` ~5 ms (``enum``, ``selectors``); the C module ``_socket`` that both are built
on costs nothing more. The CLI needs little of HTTP: one request at a time, a JSON body, a
``Content-Length`` or chunked answer read whole or as it arrives (server-sent events). TLS
(``https://`` servers) imports ``socket`` and ``ssl`` when it is used.
"""

from __future__ import annotations

import _socket
from collections.abc import Iterator

from .errors import ServerUnreachable, UsageError

MAX_HEADER_LINE = 65536
MAX_HEADERS = 200
USER_AGENT = "kernel-cli/0.1.0"

TYPE_CHECKING = False  # typing costs ~7 ms to import; mypy knows this name
if TYPE_CHECKING:
    from typing import Any


CHUNK = 1024 * 1024


class Upload:
    """A request body sent from an open file, ``size`` bytes, in chunks (`Connection`)."""

    __slots__ = ("file", "name", "progress", "size")

    def __init__(self, file: Any, size: int, name: str, progress: Any = None) -> None:
        self.file, self.size, self.name, self.progress = file, size, name, progress


class Url:
    """A parsed server URL; ``prefix`` is the path the API lives under ("" or "/kernel")."""

    __slots__ = ("host", "port", "prefix", "scheme")

    def __init__(self, scheme: str, host: str, port: int, prefix: str) -> None:
        self.scheme, self.host, self.port, self.prefix = scheme, host, port, prefix

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Url) and self.base == other.base

    def __hash__(self) -> int:
        return hash(self.base)

    def __repr__(self) -> str:
        return f"Url({self.base!r})"

    @property
    def base(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        port = "" if self.port == default else f":{self.port}"
        return f"{self.scheme}://{host}{port}{self.prefix}"


def parse_url(text: str) -> Url:
    """``http(s)://host[:port][/prefix]`` (no query, no user info); UsageError otherwise."""
    raw = text.strip()
    scheme, sep, rest = raw.partition("://")
    scheme = scheme.lower()
    if not sep:
        scheme, rest = "http", raw  # "kernel.example:8002" — like curl
    if scheme not in ("http", "https"):
        raise UsageError(f"server URL {text!r} must start with http:// or https://")
    netloc, slash, path = rest.partition("/")
    if "?" in rest or "#" in rest or "@" in netloc or not netloc:
        raise UsageError(f"server URL {text!r} is not of the form http(s)://HOST[:PORT][/PATH]")
    if netloc.startswith("["):
        host, bracket, after = netloc[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            raise UsageError(f"server URL {text!r} has a malformed IPv6 address")
        port_text = after[1:]
    else:
        host, _, port_text = netloc.partition(":")
    if not host or any(c.isspace() or ord(c) < 32 for c in host):
        raise UsageError(f"server URL {text!r} has no valid host")
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise UsageError(f"server URL {text!r} has an invalid port")
        port = int(port_text)
    else:
        port = 443 if scheme == "https" else 80
    prefix = ("/" + path).rstrip("/") if slash else ""
    return Url(scheme, host.lower(), port, prefix)


class Response:
    """Status, headers (names lower-cased) and the body, read once: `read` or `iter_body`."""

    def __init__(self, conn: Connection, status: int, reason: str, headers: dict[str, str]):
        self._conn = conn
        self.status = status
        self.reason = reason
        self.headers = headers
        self.done = False

    def read(self, limit: int = 64 * 1024 * 1024) -> bytes:
        out = bytearray()
        for piece in self.iter_body():
            out += piece
            if len(out) > limit:
                self._conn.close()
                raise ServerUnreachable(f"the answer from {self._conn.url.base} is too large")
        return bytes(out)

    def iter_body(self) -> Iterator[bytes]:
        """The body's bytes as they arrive (chunked, by length, or until the server closes)."""
        if self.done:
            return
        conn = self._conn
        if self.status in (204, 304):
            self.done = True
            return
        te = self.headers.get("transfer-encoding", "").lower()
        if "chunked" in te:
            while True:
                line = conn.readline().split(b";", 1)[0].strip()
                try:
                    size = int(line, 16)
                except ValueError:
                    conn.close()
                    raise ServerUnreachable(f"{conn.url.base} sent a malformed chunk") from None
                if size == 0:
                    while conn.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                yield conn.read_exact(size)
                conn.readline()
        elif "content-length" in self.headers:
            try:
                left = int(self.headers["content-length"])
            except ValueError:
                conn.close()
                raise ServerUnreachable(f"{conn.url.base} sent a bad Content-Length") from None
            while left > 0:
                piece = conn.read_some(left)
                left -= len(piece)
                yield piece
        else:
            conn.keep_alive = False
            while piece := conn.read_some(65536, eof_ok=True):
                yield piece
        self.done = True
        if self.headers.get("connection", "").lower() == "close" or not conn.keep_alive:
            conn.close()


class Connection:
    """One connection to the server; requests are sent one after the other (keep-alive)."""

    def __init__(self, url: Url, *, connect_timeout: float = 10.0) -> None:
        self.url = url
        self.connect_timeout = connect_timeout
        self.keep_alive = True
        self._sock: Any = None  # a _socket.socket, or an ssl.SSLSocket for https
        self._buf = b""
        self._last: Response | None = None  # an answer whose body may not be read to its end

    # -- the socket ---------------------------------------------------------------------------
    def _connect(self) -> None:
        url = self.url
        try:
            infos = _socket.getaddrinfo(url.host, url.port, 0, _socket.SOCK_STREAM)
        except _socket.gaierror as e:
            raise self._down(f"cannot resolve {url.host!r} ({e.strerror})") from None
        except UnicodeError:
            raise UsageError(f"server host {url.host!r} is not a valid host name") from None
        last: OSError | None = None
        for family, kind, proto, _name, addr in infos:
            sock = _socket.socket(family, kind, proto)
            try:
                sock.settimeout(self.connect_timeout)
                sock.connect(addr)
                sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
            except OSError as e:
                sock.close()
                last = e
                continue
            self._sock = self._tls(sock) if url.scheme == "https" else sock
            self._buf = b""
            self.keep_alive = True
            return
        raise self._down(_reason(last)) from None

    def _tls(self, raw: _socket.socket) -> Any:
        import socket  # only for https: the ssl module wraps socket.socket, not _socket
        import ssl

        sock = socket.socket(fileno=raw.detach())
        sock.settimeout(self.connect_timeout)
        try:
            ctx = ssl.create_default_context()
            return ctx.wrap_socket(sock, server_hostname=self.url.host)
        except ssl.SSLCertVerificationError as e:
            sock.close()
            raise self._down(f"TLS certificate not trusted ({e.verify_message})") from None
        except (ssl.SSLError, OSError) as e:
            sock.close()
            raise self._down(f"TLS handshake failed ({_reason(e)})") from None

    def _down(self, why: str) -> ServerUnreachable:
        return ServerUnreachable(f"cannot reach the Kernel server at {self.url.base}: {why}")

    def close(self) -> None:
        self.keep_alive = False
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None
                self._buf = b""

    # -- reading ------------------------------------------------------------------------------
    def _recv(self, eof_ok: bool = False) -> bytes:
        assert self._sock is not None
        try:
            data = self._sock.recv(65536)
        except TimeoutError:
            self.close()
            raise self._down("no answer in time (read timed out)") from None
        except OSError as e:
            self.close()
            raise self._down(f"the connection broke ({_reason(e)})") from None
        if not data and not eof_ok:
            self.close()
            raise self._down("the server closed the connection in the middle of an answer")
        return data

    def readline(self) -> bytes:
        while True:
            i = self._buf.find(b"\n")
            if i >= 0:
                line, self._buf = self._buf[: i + 1], self._buf[i + 1 :]
                return line
            if len(self._buf) > MAX_HEADER_LINE:
                self.close()
                raise self._down("an answer line is too long")
            self._buf += self._recv()

    def read_exact(self, n: int) -> bytes:
        while len(self._buf) < n:
            self._buf += self._recv()
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def read_some(self, n: int, eof_ok: bool = False) -> bytes:
        if not self._buf:
            self._buf = self._recv(eof_ok)
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def set_read_timeout(self, seconds: float | None) -> None:
        if self._sock is not None:
            self._sock.settimeout(seconds)

    # -- one exchange ------------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes | Upload | None = None,
        *,
        read_timeout: float | None = 60.0,
    ) -> Response:
        """Send one request and read the status and headers. A kept-alive connection the
        server has closed meanwhile is reopened once for requests that may be repeated. An
        `Upload` body is sent from its file in chunks (never read whole)."""
        if self._last is not None and not self._last.done:
            self.close()  # the previous body was left unread (an event stream we stopped)
        reused = self._sock is not None
        for attempt in (1, 2):
            if self._sock is None:
                self._connect()
            try:
                return self._exchange(method, path, headers, body, read_timeout)
            except ServerUnreachable:
                if not (reused and attempt == 1 and method in ("GET", "DELETE")):
                    raise
                self.close()
        raise AssertionError("unreachable")

    def _exchange(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes | Upload | None,
        read_timeout: float | None,
    ) -> Response:
        assert self._sock is not None
        head = [f"{method} {self.url.prefix}{path} HTTP/1.1", f"Host: {self._host_header()}"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        head.append(f"User-Agent: {USER_AGENT}")
        upload = body if isinstance(body, Upload) else None
        inline = body if isinstance(body, bytes) else b""
        if upload is not None:
            head.append(f"Content-Length: {upload.size}")
        elif body is not None:
            head.append(f"Content-Length: {len(inline)}")
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + inline
        try:
            self._sock.settimeout(self.connect_timeout)
            self._sock.sendall(data)
            if upload is not None:
                self._send_file(upload)
            self._sock.settimeout(read_timeout)
        except OSError as e:
            if upload is not None and self._answered_early():
                # The server refused the upload before reading it all (413): its answer is
                # waiting to be read.
                self._sock.settimeout(read_timeout)
            else:
                self.close()
                raise self._down(f"could not send the request ({_reason(e)})") from None
        while True:
            status, reason = self._status_line()
            headers_in = self._headers()
            if status >= 200 or status == 101:
                self._last = Response(self, status, reason, headers_in)
                return self._last
            # 1xx informational answers (100 Continue) come before the real one

    def _send_file(self, upload: Upload) -> None:
        left = upload.size
        while left > 0:
            chunk = upload.file.read(min(CHUNK, left))
            if not chunk:
                raise UsageError(f"{upload.name} got shorter while it was being sent")
            self._sock.sendall(chunk)
            left -= len(chunk)
            if upload.progress is not None:
                upload.progress(upload.size - left)

    def _answered_early(self) -> bool:
        try:
            self._sock.settimeout(5.0)
            data = self._sock.recv(65536)
        except OSError:
            return False
        self._buf += data
        return data.startswith(b"HTTP/1.")

    def _host_header(self) -> str:
        url = self.url
        host = f"[{url.host}]" if ":" in url.host else url.host
        default = 443 if url.scheme == "https" else 80
        return host if url.port == default else f"{host}:{url.port}"

    def _status_line(self) -> tuple[int, str]:
        line = self.readline().decode("latin-1").rstrip("\r\n")
        version, _, rest = line.partition(" ")
        code, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/1.") or not code.isdigit() or len(code) != 3:
            self.close()
            raise self._down(f"it did not answer HTTP (it said {line[:60]!r})")
        if version == "HTTP/1.0":
            self.keep_alive = False
        return int(code), reason

    def _headers(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for _ in range(MAX_HEADERS):
            line = self.readline().decode("latin-1").rstrip("\r\n")
            if not line:
                return out
            name, colon, value = line.partition(":")
            if colon:
                key = name.strip().lower()
                value = value.strip()
                out[key] = f"{out[key]}, {value}" if key in out else value
        self.close()
        raise self._down("the answer has too many headers")


def _reason(err: BaseException | None) -> str:
    if isinstance(err, ConnectionRefusedError):
        return "connection refused"
    if isinstance(err, TimeoutError):
        return "timed out"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror.lower()
    return str(err) or type(err).__name__

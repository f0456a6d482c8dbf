"""HTTP/1.1 as the server's agent client writes and reads it: pure functions and the errors
(no I/O; agent_client/wire.py does the talking, tests/agent/test_wire.py tests both)."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

MAX_HEAD = 64 * 1024  # bytes of a response's status line and headers
MAX_HEADERS = 100
HEX = b"0123456789abcdefABCDEF"  # the digits of a chunk size


class WireError(Exception):
    """The agent's answer is not HTTP as this client reads it, or the connection broke."""


class PinMismatch(WireError):
    """The agent's TLS certificate is not the pinned one (nothing was sent)."""

    def __init__(self, seen: str, pin: str) -> None:
        super().__init__(f"TLS certificate fingerprint {seen} is not the pinned {pin}")


class Target:
    """Where an agent is: scheme, host, port, and the Host header; parsed once per agent."""

    __slots__ = ("host", "host_header", "key", "pin", "port", "tls")

    def __init__(self, url: str, pin: str | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.tls else 80)
        name = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.tls else 80
        self.host_header = name if self.port == default else f"{name}:{self.port}"
        self.pin = pin if self.tls else None
        self.key = (self.tls, self.host, self.port, self.pin)


def _check_header(text: str) -> str:
    if "\r" in text or "\n" in text:
        raise ValueError("a header may not hold a line break")
    return text


def encode_request(
    method: str, path: str, host_header: str, headers: Mapping[str, str], body: bytes
) -> bytes:
    """The request's bytes: request line, headers, body (pure; tested directly)."""
    if not path.startswith("/") or any(c in path for c in " \r\n"):
        raise ValueError(f"bad request target {path!r}")
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host_header}"]
    lines += [f"{_check_header(k)}: {_check_header(v)}" for k, v in headers.items()]
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def parse_head(raw: bytes) -> tuple[int, bool, dict[str, str]]:
    """A response head (without its final blank line): status, whether it is HTTP/1.0, and the
    headers (names lower-case; a repeated header's values joined by ", ")."""
    lines = raw.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or parts[0] not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise WireError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    code = parts[1]
    if len(code) != 3 or not code.isdigit():
        raise WireError(f"bad status code {code[:10]!r}")
    if len(lines) - 1 > MAX_HEADERS:
        raise WireError("too many headers")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip() or b" " in name:
            raise WireError(f"bad header line {line[:80]!r}")
        key = name.decode("latin-1").lower()
        text = value.strip().decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return int(code), parts[0] == b"HTTP/1.0", headers


class ChunkedBody:
    """A chunked body read as it arrives: `feed` takes what it can from the front of a buffer
    and says what data that was and whether the body (with its trailers) has ended."""

    def __init__(self) -> None:
        self.state = "size"  # "size" | "data" | "crlf" | "trailer"
        self.left = 0  # bytes left of the chunk being read

    def feed(self, buf: bytearray) -> tuple[list[bytes], bool]:
        pieces: list[bytes] = []
        while buf:
            if self.state == "size":
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > 1024:
                        raise WireError("chunk size line too long")
                    break
                size = bytes(buf[:end]).split(b";", 1)[0].strip()  # extensions ignored
                del buf[: end + 2]
                if not size or len(size) > 15 or size.strip(HEX):
                    raise WireError(f"bad chunk size {size[:20]!r}")
                self.left = int(size, 16)
                self.state = "data" if self.left else "trailer"
            elif self.state == "data":
                take = min(self.left, len(buf))
                pieces.append(bytes(buf[:take]))
                del buf[:take]
                self.left -= take
                if self.left == 0:
                    self.state = "crlf"
            elif self.state == "crlf":
                if len(buf) < 2:
                    break
                if buf[:2] != b"\r\n":
                    raise WireError("a chunk does not end with CRLF")
                del buf[:2]
                self.state = "size"
            else:  # trailer lines, up to an empty one
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > MAX_HEAD:
                        raise WireError("trailers too long")
                    break
                del buf[: end + 2]
                if end == 0:
                    self.state = "done"
                    return pieces, True
        return pieces, False

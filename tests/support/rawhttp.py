"""Raw HTTP/1.1 over a socket, for hostile-input tests: send any bytes, read back every answer
the server gives (1xx included) until it closes, a final answer is complete, or time is up."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field


@dataclass
class Answer:
    status: int
    head: bytes  # status line and headers
    body: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    def header(self, name: bytes) -> list[bytes]:
        return [v for n, v in self.headers if n.lower() == name.lower()]


def request(
    method: bytes,
    target: bytes,
    headers: list[tuple[bytes, bytes]],
    body: bytes = b"",
    framing: str = "length",
    version: bytes = b"HTTP/1.1",
) -> bytes:
    """A request's bytes. ``framing``: "length" (Content-Length of the body), "chunked" (the
    body in two chunks), or "none" (no length: a body, if any, reads as a next request)."""
    framed: list[tuple[bytes, bytes]] = []
    payload = body
    if framing == "length":
        framed.append((b"Content-Length", b"%d" % len(body)))
    elif framing == "chunked":
        framed.append((b"Transfer-Encoding", b"chunked"))
        half = len(body) // 2
        parts = [p for p in (body[:half], body[half:]) if p]
        payload = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
    lines = [method + b" " + target + b" " + version]
    lines += [n + b": " + v for n, v in framed + headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + payload


def exchange(
    address: tuple[str, int], data: bytes, wait: float = 2.0, head_only: bool = False
) -> list[Answer]:
    """Send ``data``; the answers read before the server closed, a final answer was complete,
    or ``wait`` seconds passed (the last one may be cut short then)."""
    answers: list[Answer] = []
    deadline = time.monotonic() + wait
    buf = b""
    try:
        with socket.create_connection(address, timeout=wait) as s:
            try:
                s.sendall(data)
            except OSError:
                pass  # the server answered and closed before taking it all
            while time.monotonic() < deadline:
                s.settimeout(max(0.01, deadline - time.monotonic()))
                try:
                    chunk = s.recv(65536)
                except (TimeoutError, ConnectionResetError):
                    break
                if not chunk:
                    break
                buf += chunk
                answers, done = parse(buf, head_only)
                if done:
                    return answers
    except OSError:
        pass
    answers, _done = parse(buf, head_only, closed=True)
    return answers


def parse(buf: bytes, head_only: bool = False, closed: bool = False) -> tuple[list[Answer], bool]:
    """The answers in ``buf``; True once a final (non-1xx) answer is complete. With
    ``closed``, a final answer without a length ends where the bytes end."""
    answers: list[Answer] = []
    while b"\r\n\r\n" in buf:
        head, _, rest = buf.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        headers = [
            (n.strip(), v.strip()) for n, _, v in (line.partition(b":") for line in lines[1:])
        ]
        answer = Answer(status, head, headers=headers)
        answers.append(answer)
        if 100 <= status < 200:
            buf = rest
            continue
        if head_only or status in (204, 304):
            return answers, True
        if any(v.lower() == b"chunked" for v in answer.header(b"transfer-encoding")):
            answer.body = rest
            return answers, rest.endswith(b"0\r\n\r\n") or closed
        lengths = answer.header(b"content-length")
        if lengths and lengths[0].isdigit():
            answer.body = rest[: int(lengths[0])]
            return answers, len(rest) >= int(lengths[0])
        answer.body = rest
        return answers, closed
    return answers, False

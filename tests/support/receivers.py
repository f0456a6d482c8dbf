"""Receivers of notifications for tests, on loopback: `Sink`, a JSON webhook (what apprise's
``json://`` posts to), and `Mailbox`, a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller

from support.procs import free_port


class Sink:
    """A JSON webhook receiver on loopback (apprise's json:// posts here). ``status`` is what
    it answers; ``stop()`` takes it down (connections refused)."""

    def __init__(self) -> None:
        self.got: list[dict[str, Any]] = []
        self.status = 200
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {"raw": raw.decode("utf-8", "replace")}
                sink.got.append({"path": self.path, "body": body})
                self.send_response(sink.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "/hook") -> str:
        return f"json://127.0.0.1:{self.port}{path}"

    def titles(self) -> list[str]:
        return [str(m["body"].get("title")) for m in self.got]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class Mailbox:
    """A real SMTP server (aiosmtpd) on loopback, keeping what it receives."""

    def __init__(self) -> None:
        self.got: list[tuple[str, list[str], str]] = []
        box = self

        class Handler:
            async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
                box.got.append((envelope.mail_from, list(envelope.rcpt_tos),
                                envelope.content.decode("utf-8", "replace")))  # fmt: skip
                return "250 OK"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def url(self) -> str:
        return f"mailto://127.0.0.1:{self.port}?from=kernel@example.com&to=ops@example.com"

    def stop(self) -> None:
        self.controller.stop()

"""The HTTP server in front of the app: waitress, tuned (docs/server.md, "Serving").

waitress reads every request — headers and body — in one I/O thread (non-blocking sockets,
poll) and hands only complete requests to its worker threads. So an idle or slow client costs
a socket and a buffer, never a worker thread, and cannot starve other clients; a worker is
busy only while the app runs (or while a live event stream is open). Streamed responses are
sent as each chunk is produced (SSE stays live).
"""

from __future__ import annotations

import copy
import ipaddress
import json
import logging
import resource
from typing import Any

from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import create_server
from waitress.utilities import RequestEntityTooLarge

from kernel.exceptions import ConfigError
from kernel.server.files.storage import UPLOAD_PATH, too_large

log = logging.getLogger("kernel.server")

# The X-Forwarded-* headers taken from a TRUSTED_PROXY (and dropped from everyone else).
PROXY_HEADERS = {"x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-forwarded-port"}
# File descriptors beyond the connections: database, agents, the local agent, logs.
SPARE_FDS = 1024


def adjustments(config: Any) -> dict[str, Any]:
    """waitress' settings from Kernel's (THREADS, BACKLOG, CONNECTION_LIMIT, IDLE_TIMEOUT,
    MAX_CONTENT_LENGTH, TRUSTED_PROXY)."""
    idle = int(config["IDLE_TIMEOUT"])
    kw: dict[str, Any] = {
        "threads": int(config["THREADS"]),
        # A burst of connections waits in the kernel's queue instead of being reset (Linux
        # caps it at net.core.somaxconn).
        "backlog": int(config["BACKLOG"]),
        # Open connections at once; beyond it new ones wait in the backlog until one closes.
        "connection_limit": int(config["CONNECTION_LIMIT"]),
        # Connections with no request in progress are closed after this long; the sweep runs
        # often enough that the limit holds within a few seconds.
        "channel_timeout": idle,
        "cleanup_interval": max(1, min(30, idle // 4)),
        # A body that could not be accepted is refused before it is read (or spooled to disk);
        # file uploads have their own, larger limit (`_channel_for`).
        "max_request_body_size": int(config["MAX_CONTENT_LENGTH"]),
        # select() cannot watch descriptors above 1024; poll() can.
        "asyncore_use_poll": True,
        "ident": "kernel-server",
        "expose_tracebacks": False,
        # Forwarded headers are removed from requests that did not come from TRUSTED_PROXY.
        "clear_untrusted_proxy_headers": True,
    }
    proxy = config.get("TRUSTED_PROXY")
    if proxy:
        proxy = str(proxy).strip()
        if proxy != "*":
            try:
                proxy = str(ipaddress.ip_address(proxy))
            except ValueError:
                raise ConfigError(
                    f"setting TRUSTED_PROXY (KERNEL_TRUSTED_PROXY) must be the proxy's IP "
                    f"address or *, not {proxy!r}"
                ) from None
        kw.update(trusted_proxy=proxy, trusted_proxy_count=1, trusted_proxy_headers=PROXY_HEADERS)
    return kw


def raise_fd_limit(connections: int) -> None:
    """Allow one descriptor per connection and then some: a service started with the usual
    soft limit of 1024 would otherwise fail accept() long before CONNECTION_LIMIT."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = connections + SPARE_FDS
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        if new < want:
            log.warning(
                "open-file limit %d is below CONNECTION_LIMIT + %d; raise LimitNOFILE",
                new,
                SPARE_FDS,
            )


def _channel_for(adj: Adjustments, upload_limit: int) -> type[HTTPChannel]:
    """waitress' connection class, with one body limit for ``POST`` of UPLOAD_PATH (an
    upload, FILES_MAX_UPLOAD) and MAX_CONTENT_LENGTH for everything else — decided from the
    request line and headers, before any of the body is read. (waitress spools a body over
    512 KiB to a temporary file, so a large upload costs disk, not memory.)"""
    upload_adj = copy.copy(adj)
    upload_adj.max_request_body_size = upload_limit + 1  # waitress refuses at >= this

    class Parser(HTTPRequestParser):
        def parse_header(self, header_plus: bytes) -> None:
            super().parse_header(header_plus)
            if self.command == "POST" and self.path == UPLOAD_PATH:
                self.adj = upload_adj  # read for the body's limit once the headers are in

        def received(self, data: bytes) -> int:
            consumed: int = super().received(data)
            error: object = getattr(self, "error", None)
            if self.adj is upload_adj and isinstance(error, RequestEntityTooLarge):
                size = self.content_length if self.content_length > upload_limit else None
                self.error = _UploadTooLarge(too_large(size, upload_limit).message)
            return consumed

    class Channel(HTTPChannel):
        parser_class = Parser

    return Channel


class _UploadTooLarge(RequestEntityTooLarge):
    """waitress' 413 for an upload over the cap, as the API's other errors are: JSON."""

    def to_response(self, ident: str | None = None) -> tuple[str, list[tuple[str, str]], bytes]:
        body = json.dumps({"error": "too_large", "message": self.body}).encode()
        return f"{self.code} {self.reason}", [("Content-Type", "application/json")], body


class Server:
    """A bound, listening waitress server: ``run()`` serves until KeyboardInterrupt (then its
    worker threads are stopped), ``close()`` closes the socket and every open connection."""

    def __init__(self, app: Any, host: str, port: int) -> None:
        kw = adjustments(app.config)
        raise_fd_limit(kw["connection_limit"])
        # One line per request queued behind busy threads is noise in a burst (which is
        # served all the same); threads that stay busy show in latency, not in this log.
        logging.getLogger("waitress.queue").setLevel(logging.ERROR)
        self._map: dict[int, Any] = {}  # its own socket map, so close() reaches every channel
        self._server = create_server(app, map=self._map, host=host, port=port, **kw)
        self._server.channel_class = _channel_for(
            self._server.adj, int(app.config["FILES_MAX_UPLOAD"])
        )

    @property
    def port(self) -> int:
        """The port it listens on (the one chosen, for port 0)."""
        return int(self._server.effective_port)

    def run(self) -> None:
        self._server.run()

    def close(self) -> None:
        wasyncore.close_all(self._map)

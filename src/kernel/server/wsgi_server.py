"""The HTTP server in front of the app: waitress, tuned (docs/server.md, "Serving").

waitress reads every request — headers and body — in one I/O thread (non-blocking sockets,
poll) and hands only complete requests to its worker threads. So an idle or slow client costs
a socket and a buffer, never a worker thread, and cannot starve other clients; a worker is
busy only while the app runs (or while a live event stream is open). Streamed responses are
sent as each chunk is produced (SSE stays live).
"""

from __future__ import annotations

import ipaddress
import logging
import resource
from typing import Any

from waitress import wasyncore
from waitress.server import create_server

from kernel.exceptions import ConfigError

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
        # A body that could not be accepted is refused before it is read (or spooled to disk).
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

    @property
    def port(self) -> int:
        """The port it listens on (the one chosen, for port 0)."""
        return int(self._server.effective_port)

    def run(self) -> None:
        self._server.run()

    def close(self) -> None:
        wasyncore.close_all(self._map)

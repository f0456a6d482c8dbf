"""Serving the app in production: the HTTP server (waitress, tuned in ``wsgi_server``), the
first admin, and the background services (components.py: job runner, status poller, local
agent) started and stopped around it — all in this one process, which owns them."""

from __future__ import annotations

import logging
import signal
from types import FrameType

from flask import Flask

from kernel.exceptions import InvalidInput
from kernel.server.auth.users import ensure_first_admin
from kernel.server.cluster.exclusive import hold_sqlite
from kernel.server.components import components
from kernel.server.wsgi_server import Server

log = logging.getLogger("kernel.server")


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidInput(f"listen address {value!r} must be HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


def _interrupt(_sig: int, _frame: FrameType | None) -> None:
    # Only the first signal interrupts: a second Ctrl-C must not cut the shutdown short (the
    # runner, poller and local agent are being stopped; that is bounded).
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def serve(app: Flask, listen: str) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    host, port = parse_listen(listen)
    parts = components(app)
    lock = hold_sqlite(parts.db)  # noqa: F841 - held while serving: one server per SQLite file
    with parts.db.session() as s:
        password = ensure_first_admin(s)
    url = app.config.get("URL") or f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}"
    if password:
        print(
            f"\n  First start: created user 'admin' with password: {password}\n"
            "  (shown only this once; change it with the API)\n",
            flush=True,
        )
    # Bound first: a port in use (or a bad serving setting) stops here, before anything starts.
    server = Server(app, host, port)
    # Both, explicitly: a shell starts background jobs with SIGINT ignored, and Ctrl-C must
    # still stop the server and its local agent.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        parts.start()  # the background services (components.py)
        print(f"  Kernel is serving on {host}:{port} — open {url}/", flush=True)
        # Until interrupted; then it stops its worker threads, waiting up to 5 s for requests
        # in progress (a live event stream is cut there: its client reconnects).
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()  # the listening socket and every connection still open
        parts.close()
    return 0

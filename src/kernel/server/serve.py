"""Serving the app in production: cheroot (a threaded WSGI server that writes each chunk of a
streamed response as it comes, so live events reach clients at once), the first admin, and
the background services (components.py) started and stopped around it."""

from __future__ import annotations

import logging
import signal
from types import FrameType
from typing import Any

from cheroot import wsgi
from flask import Flask

from kernel.exceptions import InvalidInput
from kernel.server.auth.users import ensure_first_admin
from kernel.server.components import components

log = logging.getLogger("kernel.server")


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidInput(f"listen address {value!r} must be HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


def _interrupt(_sig: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def serve(app: Flask, listen: str) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    host, port = parse_listen(listen)
    parts = components(app)
    with parts.db.session() as s:
        password = ensure_first_admin(s)
    url = app.config.get("URL") or f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}"
    if password:
        print(
            f"\n  First start: created user 'admin' with password: {password}\n"
            "  (shown only this once; change it with the API)\n",
            flush=True,
        )
    parts.start()  # the background services: job runner, status poller, local agent
    server: Any = wsgi.Server(
        (host, port), app, numthreads=int(app.config["THREADS"]), server_name="kernel-server"
    )
    # Both, explicitly: a shell starts background jobs with SIGINT ignored, and Ctrl-C must
    # still stop the server and its local agent.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    print(f"  Kernel is serving on {host}:{port} — open {url}/", flush=True)
    try:
        server.prepare()
        server.serve()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        parts.close()
    return 0

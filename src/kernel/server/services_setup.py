"""Plugging the services catalogue and live status into an app (one call in create_app)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from flask import Flask, Response, jsonify

from . import artifacts, catalog, services_api, status_api
from .poller import DEFAULTS, Poller


def init_app(app: Flask) -> None:
    """Blueprints, the catalogue cache, the poller (started and stopped with the job runner),
    the example services in a new data dir, and our paths in the OpenAPI document."""
    for key, value in DEFAULTS.items():
        app.config.setdefault(key, value)
    data_dir = Path(app.config["DATA_DIR"])
    # Not under TESTING: the example init scripts would run on whatever test agents join.
    if _flag(app, "INSTALL_EXAMPLES"):
        catalog.install_examples(data_dir)
    cache = services_api.install_cache(app)
    poller = Poller(app, cache)
    app.extensions[status_api.EXTENSION] = poller
    for bp in (services_api.bp, status_api.bp, artifacts.bp):
        if bp.name not in app.blueprints:
            app.register_blueprint(bp)
    # Under TESTING only when asked: other areas' tests start the runner with their own
    # agents and should not see probes arrive (nor servers marked offline by them).
    if _flag(app, "STATUS_POLLER"):
        _follow_runner(app, poller)
    _extend_openapi(app)


def _flag(app: Flask, name: str) -> bool:
    """A true/false setting that defaults to on, but to off under TESTING."""
    value = app.config.get(name)
    if value is None:
        return not app.config.get("TESTING")
    if isinstance(value, str):  # from the environment: KERNEL_STATUS_POLLER=false
        return value.strip().lower() not in ("0", "false", "no", "off", "")
    return bool(value)


def _follow_runner(app: Flask, poller: Poller) -> None:
    """Start and stop the poller with the runner: whoever serves the app (kernel-server, test
    fixtures) starts the runner, and the poller is background work of the same kind."""
    runner = app.extensions["kernel.runner"]
    start, stop = runner.start, runner.stop

    @functools.wraps(start)
    def start_both() -> None:
        start()
        poller.start()

    @functools.wraps(stop)
    def stop_both(*args: Any, **kwargs: Any) -> None:
        poller.stop()
        stop(*args, **kwargs)

    runner.start, runner.stop = start_both, stop_both


def _extend_openapi(app: Flask) -> None:
    view = app.view_functions.get("openapi.openapi_json")
    if view is None:
        return
    from . import openapi

    @functools.wraps(view)
    def with_ours() -> Response:
        doc = openapi.document()
        doc["paths"].update(openapi_paths())
        return jsonify(doc)

    app.view_functions["openapi.openapi_json"] = with_ours


def openapi_paths() -> dict[str, Any]:
    """The OpenAPI paths of services_api and status_api (openapi.py's helpers and shapes)."""
    from .openapi import TARGETS, _body, _op, _path_int, _query
    from .service_ops import OPERATIONS
    from .shell import MAX_LOG_LINES

    sid = _path_int("server_id")
    # Any string: names that break the rule get a 400 that says so (NAME is the rule).
    svc = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    number = {"type": "number", "minimum": 0}
    return {
        "/api/v1/services": {"get": _op("the services catalogue, each with its problems")},
        "/api/v1/services/refresh": {"post": _op("rescan the service folder")},
        "/api/v1/services/{name}": {
            "get": _op("one service: scripts, artifacts, hosts", params=[svc])
        },
        "/api/v1/services/{name}/hosts": {
            "get": _op("where the service is installed / active / failed", params=[svc])
        },
        "/api/v1/services/{name}/{op}": {
            "post": _op(
                "run an operation as a job (409 while another runs on a server)",
                ok=201,
                params=[
                    svc,
                    {
                        "name": "op",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "enum": list(OPERATIONS)},
                    },
                ],
                body=_body(
                    {
                        "targets": TARGETS,
                        "lines": {"type": "integer", "minimum": 1, "maximum": MAX_LOG_LINES},
                        "timeout": {"type": "number", "minimum": 1, "maximum": 604800},
                    },
                    ["targets"],
                ),
            )
        },
        "/api/v1/status": {"get": _op("every host's health, facts and last metrics")},
        "/api/v1/status/refresh": {
            "post": _op(
                "probe all hosts (or the named ones) now; answers at once",
                ok=202,
                body=_body({"servers": {"type": "array", "items": {"type": "string"}}}),
            )
        },
        "/api/v1/servers/{server_id}/status": {
            "get": _op("one host's health, facts, metrics and unit states", params=[sid])
        },
        "/api/v1/servers/{server_id}/services": {
            "get": _op("each catalogue service's state on this host", params=[sid])
        },
        "/api/v1/servers/{server_id}/metrics": {
            "get": _op(
                "metrics series",
                params=[
                    sid,
                    _query("since", number),
                    _query("until", number),
                    _query("names", {"type": "string"}),
                ],
            )
        },
        "/api/v1/servers/{server_id}/status/refresh": {
            "post": _op("probe this host now; answers at once", ok=202, params=[sid])
        },
    }

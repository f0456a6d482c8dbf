"""The app factory: ``create_app(test_config=None)``.

Configuration: defaults (config.py) → ``<data dir>/kernel.cfg`` → ``KERNEL_*`` environment →
``test_config``. The factory migrates the database; background work (job runner, local agent)
is started by whoever serves the app (``kernel-server``, test fixtures), not here.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, jsonify, redirect, request
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.routing import IntegerConverter

from . import access, audit, errors
from .config import CONFIG_FILE, DEFAULTS, ConfigError, check, data_dir_from, secret_key
from .context import close_session
from .db import Database, sqlite_url
from .events import EventBus
from .migrate import upgrade
from .runner import Runner


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    data_dir = data_dir_from(test_config)
    data_dir.mkdir(parents=True, exist_ok=True)
    app = Flask(
        __name__, instance_path=str(data_dir), instance_relative_config=True, static_folder=None
    )
    app.config.from_mapping(DEFAULTS)
    app.config.from_pyfile(CONFIG_FILE, silent=True)
    app.config.from_prefixed_env("KERNEL")
    if test_config:
        app.config.from_mapping(test_config)
    app.config["DATA_DIR"] = str(data_dir)
    if not app.config["SECRET_KEY"]:
        app.config["SECRET_KEY"] = secret_key(data_dir)
    if app.config.get("URL"):
        app.config["URL"] = str(app.config["URL"]).rstrip("/")
    # The services area reads prefixed names (KERNEL_URL, …); keep one source of truth.
    app.config["KERNEL_URL"] = app.config.get("URL")

    check(app.config)

    try:
        database = Database(app.config["DATABASE_URL"] or sqlite_url(data_dir))
        if app.config.get("MIGRATE", True):
            upgrade(database.engine)
    except SQLAlchemyError as e:
        # A bad KERNEL_DATABASE_URL or a database that is down: one clear line, no traceback.
        reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
        raise ConfigError(f"cannot use the database (DATABASE_URL): {reason}") from e
    app.extensions["kernel.db"] = database
    app.extensions["kernel.events"] = EventBus()
    app.extensions["kernel.runner"] = Runner(app)

    # Ids in URLs are bounded to what an INTEGER column holds: bigger ones are simply 404.
    app.url_map.converters["int"] = DatabaseId
    access.init_app(app)
    errors.register(app)
    audit.init_app(app)
    app.teardown_appcontext(close_session)
    _register_blueprints(app)

    @app.get("/healthz")
    @access.public
    def healthz() -> Response:
        return Response("ok\n", mimetype="text/plain")

    @app.get("/")
    @access.public
    def root() -> Response:
        """Until the console exists: a browser goes to the login page, an API client is told
        where the API is."""
        accept = request.accept_mimetypes
        named = {value for value, _quality in accept}
        if "text/html" in named and accept["text/html"] >= accept["application/json"]:
            return redirect("/login")
        return jsonify(
            {
                "name": "Kernel",
                "api": "/api/v1",
                "openapi": "/api/v1/openapi.json",
                "login": "/login",
                "message": "the REST API is under /api/v1 (docs/api.md)",
            }
        )

    return app


class DatabaseId(IntegerConverter):
    def __init__(self, url_map: Any, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max", 2**31 - 1)
        super().__init__(url_map, *args, **kwargs)


def _register_blueprints(app: Flask) -> None:
    from . import artifacts, auth, enroll, inventory, jobs_api, openapi, users
    from . import audit as audit_bp

    for module in (auth, users, audit_bp, inventory, jobs_api, enroll, openapi, artifacts):
        app.register_blueprint(module.bp)
    # The services area (catalogue, operations, status poller) plugs in with one call.
    from . import services_setup

    services_setup.init_app(app)

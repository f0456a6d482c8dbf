"""The app factory: ``create_app(test_config=None)``.

Configuration: defaults (core/config.py) → ``<data dir>/kernel.cfg`` → ``KERNEL_*`` environment
→ ``test_config``. The factory migrates the database and builds the process's components
(components.py); the background services are started by whoever serves the app
(``kernel-server``, test fixtures), never here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask, Response, jsonify
from flask.typing import ResponseReturnValue
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.routing import IntegerConverter

from kernel.exceptions import ConfigError
from kernel.server.alerts.service import AlertService
from kernel.server.auth.limiter import LoginLimiter
from kernel.server.cluster.membership import Membership
from kernel.server.cluster.relay import Relay
from kernel.server.components import KEY, Components
from kernel.server.core import sealing
from kernel.server.core.datadir import install_examples
from kernel.server.core.db import Database, sqlite_url
from kernel.server.core.events import EventBus
from kernel.server.core.sealing import Keyring
from kernel.server.core.settings import (
    CONFIG_FILE,
    check,
    data_dir_from,
    defaults,
    flag,
    secret_key,
)
from kernel.server.inventory import initflow
from kernel.server.inventory.local_agent import LocalAgent
from kernel.server.inventory.tlspin import PinSource
from kernel.server.jobs.runner import Runner
from kernel.server.models import installation
from kernel.server.models.migrate import upgrade
from kernel.server.schedules.scheduler import Scheduler
from kernel.server.services.cache import CatalogueCache
from kernel.server.status.poller import Poller
from kernel.server.web import access, audit, errors
from kernel.server.web.context import close_session
from kernel.server.web.endpoint import endpoint


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    data_dir = data_dir_from(test_config)
    data_dir.mkdir(parents=True, exist_ok=True)
    # Kernel's own files there before this start: an empty database then is a lost one.
    used_before = any((data_dir / f).exists() for f in ("secret_key", installation.ID_FILE))
    app = Flask(
        __name__, instance_path=str(data_dir), instance_relative_config=True, static_folder=None
    )
    app.config.from_mapping(defaults())
    app.config.from_pyfile(CONFIG_FILE, silent=True)
    app.config.from_prefixed_env("KERNEL")
    if test_config:
        app.config.from_mapping(test_config)
    app.config["DATA_DIR"] = str(data_dir)
    if not app.config["SECRET_KEY"]:
        app.config["SECRET_KEY"] = secret_key(data_dir)
    if app.config.get("URL"):
        app.config["URL"] = str(app.config["URL"]).rstrip("/")
    check(app.config)

    key_file = Path(app.config["SEALING_KEY_FILE"] or data_dir / "sealing.key")
    keyring = Keyring.from_file(key_file)
    database: Database | None = None
    try:
        database = Database(app.config["DATABASE_URL"] or sqlite_url(data_dir))
        sealing.attach(database.engine, keyring)
        if app.config.get("MIGRATE", True):
            upgrade(database.engine)
            installation.check(database, data_dir, used_before=used_before)
            installation.check_keys(
                database,
                keyring,
                app.config["SECRET_KEY"],
                key_file=key_file,
                stale=app.config["REPLICA_STALE"],
            )
            sealing.seal_plaintext(database.engine, "servers", "agent_key")
    except SQLAlchemyError as e:
        # A bad KERNEL_DATABASE_URL, a database that is down or damaged: one clear line.
        if database is not None:
            database.engine.dispose()
        reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
        raise ConfigError(f"cannot use the database (DATABASE_URL): {reason}") from e
    except BaseException:
        if database is not None:
            database.engine.dispose()  # no connection left open by a server that did not start
        raise
    # Not under TESTING: the example init scripts would run on whatever test agents join.
    if flag(app.config, "INSTALL_EXAMPLES"):
        install_examples(data_dir)
    parts = _components(app, database, data_dir)
    parts.runner.after_run["init"] = lambda s, job, run: initflow.after_run(s, app.config, job, run)
    parts.runner.after_run["service"] = lambda _s, _job, run: _probed(parts, run.server_id)
    app.extensions[KEY] = parts

    # Ids in URLs are bounded to what an INTEGER column holds: bigger ones are simply 404.
    app.url_map.converters["int"] = DatabaseId
    access.init_app(app)
    errors.register(app)
    audit.init_app(app)
    app.teardown_appcontext(close_session)
    _register_blueprints(app)
    return app


def _components(app: Flask, database: Database, data_dir: Path) -> Components:
    bus = EventBus()
    catalogue = CatalogueCache(data_dir / "service")
    membership = Membership(database, app.config["REPLICA_HEARTBEAT"], app.config["REPLICA_STALE"])
    runner = Runner(app.config, database, bus, membership)
    parts = Components(
        db=database,
        bus=bus,
        catalogue=catalogue,
        pins=PinSource(app.config["TLS_PIN"], app.config["URL"]),
        membership=membership,
        runner=runner,
        scheduler=Scheduler(app.config, database, runner),
        poller=Poller(
            app.config,
            database,
            lambda: catalogue.get().units,
            lambda: (membership.id, membership.live()),
        ),
        limiter=LoginLimiter(
            database, app.config["LOGIN_MAX_FAILURES"], app.config["LOGIN_WINDOW"]
        ),
        alerts=AlertService(
            app.config, database, lambda: {s.unit: s.name for s in catalogue.get() if s.unit}
        ),
        # Under TESTING only when asked: other areas' tests start the runner with their own
        # agents and should not see probes arrive (nor servers marked offline by them).
        poll=flag(app.config, "STATUS_POLLER"),
        alert=flag(app.config, "ALERTS"),
    )
    if database.engine.dialect.name == "postgresql":
        parts.relay = Relay(database, bus, membership.id, parts.poller.feed)
    if app.config.get("LOCAL_AGENT"):
        parts.local_agent = LocalAgent(app.config, database, parts.joined)
    return parts


def _probed(parts: Components, server_id: int) -> bool:
    """A service operation's run ended: its host's unit states are probed at once (a deploy
    would otherwise show "not installed" until the next round). Queues no job work."""
    parts.probe_now([server_id])
    return False


class DatabaseId(IntegerConverter):
    def __init__(self, url_map: Any, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max", 2**31 - 1)
        super().__init__(url_map, *args, **kwargs)


def _register_blueprints(app: Flask) -> None:
    from kernel.server import ui
    from kernel.server.alerts import api as alerts_api
    from kernel.server.audit import api as audit_api
    from kernel.server.auth import api as auth_api
    from kernel.server.files import api as files_api
    from kernel.server.inventory import api as inventory_api
    from kernel.server.jobs import api as jobs_api
    from kernel.server.schedules import api as schedules_api
    from kernel.server.services import api as services_api
    from kernel.server.status import api as status_api
    from kernel.server.ui import dashboard
    from kernel.server.web import openapi

    areas = (auth_api, audit_api, inventory_api, jobs_api, services_api, status_api, alerts_api,
             schedules_api, files_api)  # fmt: skip
    for area in (*areas, openapi):
        for blueprint in getattr(area, "blueprints", (area.bp,)):
            app.register_blueprint(blueprint)
    ui.init_app(app)

    @app.get("/healthz")
    @access.public
    @endpoint("liveness (no login, no details)", produces="text/plain")
    def healthz() -> Response:
        return Response("ok\n", mimetype="text/plain")

    @app.get("/")
    @access.public
    def root() -> ResponseReturnValue:
        """A browser gets the console's dashboard (after logging in); an API client is told
        where the API is."""
        if errors.wants_html():
            return dashboard.page()
        return jsonify(
            {
                "name": "Kernel",
                "api": "/api/v1",
                "openapi": "/api/v1/openapi.json",
                "login": "/login",
                "message": "the REST API is under /api/v1 (docs/api.md)",
            }
        )

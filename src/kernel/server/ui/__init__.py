"""The web console: server-rendered pages (Jinja templates, htmx for the interactive parts,
live parts over server-sent events), in English and Simplified Chinese. Each page's views
are in a module of their own; they call the same logic as the REST API (docs/console.md)."""

from __future__ import annotations

from flask import Flask

from kernel.server.ui import i18n, security, words
from kernel.server.ui.web import bp, shared_context


def init_app(app: Flask) -> None:
    # The views register themselves on `bp` when imported.
    from kernel.server.ui import admin, dashboard, jobs, login, servers, services, status  # noqa: F401

    i18n.init_app(app)
    security.init_app(app)
    app.context_processor(shared_context)
    app.jinja_env.filters.update(words.FILTERS)
    app.register_blueprint(bp)

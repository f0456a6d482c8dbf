"""The dashboard: every server at a glance, filtered, as cards or a dense table, updated live
by static/js/dashboard.js from GET /api/v1/status/events. It is the console's home page: the
root view (app.py) calls `page` for browsers."""

from __future__ import annotations

from typing import Any

from flask import current_app, request
from markupsafe import Markup

from kernel.server.status.queries import fleet, fleet_index
from kernel.server.ui import fleetview
from kernel.server.ui.web import bp, render
from kernel.server.ui.words import unit_words
from kernel.server.web import context
from kernel.server.web.access import role


def catalogue_units() -> dict[str, str]:
    """Each catalogue service that names a unit, with that unit."""
    return {svc.name: svc.unit for svc in context.catalogue().get() if svc.unit}


class Chips:
    """The service chips of a host as HTML, made once per distinct set of states: 1000 hosts
    with 5 services have only a few dozen, and escaping 5000 chips one by one in the
    template was most of the dashboard's render time."""

    def __init__(self) -> None:
        self._words = unit_words()
        self._made: dict[tuple[tuple[str, str, str], ...], Markup] = {}

    def __call__(self, services: list[tuple[str, str, str]]) -> Markup:
        key = tuple(services)
        html = self._made.get(key)
        if html is None:
            parts = []
            for name, unit, word in services:
                label = self._words.get(word, word)
                parts.append(
                    Markup(
                        '<span class="chip s-{w}" data-unit-chip="{n}" data-unit="{u}" '
                        'title="{label}"><span translate="no">{n}</span><span class="vh">: '
                        "<span data-word>{label}</span></span></span>"
                    ).format(w=word, n=name, u=unit, label=label)
                )
            html = self._made[key] = Markup('<div class="chips">{}</div>').format(
                Markup("").join(parts)
            )
        return html


def _values() -> dict[str, Any]:
    """Filters and counts over every server, from a light index; the whole rows (facts,
    figures, units) only for the page shown (DASHBOARD_PAGE servers)."""
    filters = fleetview.Filters.of(request.args)
    s = context.session()
    everyone = fleetview.index(fleet_index(s))
    kept = [h for h in everyone if filters.keeps(h)]
    page = fleetview.page_of(kept, filters.page, int(current_app.config["DASHBOARD_PAGE"]))
    order = {server_id: i for i, server_id in enumerate(page.ids)}
    rows = sorted(fleet(s, page.ids), key=lambda r: order[r["id"]]) if page.ids else []
    shown = fleetview.hosts(rows, catalogue_units())
    return {
        "filters": filters,
        "hosts": shown,
        "page": page,
        "total": len(everyone),
        "counts": fleetview.counts(everyone),
        "all_tags": fleetview.tags(everyone),
        "view": fleetview.view_for(filters, len(shown)),
        "deployable": [svc.name for svc in context.catalogue().get() if svc.deployable],
        "states": fleetview.STATES,
        "chips": Chips(),
    }


@role("viewer")
def page() -> str:
    return render("dashboard.html", active="dashboard", **_values())


@bp.get("/fleet")
@role("viewer")
def fleet_fragment() -> str:
    """The filtered server list alone (htmx swaps it in as the filters change)."""
    return render("_fleet.html", **_values())

"""Every route checks its role on the server: walk app.url_map x roles."""

from __future__ import annotations

import re

import pytest

from kernel.server.web.access import unguarded_endpoints
from kernel.server.web.endpoint import declared

# Public on purpose (docs/server.md): health, login, enrollment and the files it serves, the
# API description, the services area's signed artifact URLs and the files area's signed
# download URLs (the signature is the check).
PUBLIC = {
    "healthz",
    "ui.login",
    "ui.set_language",
    "ui.static_file",
    "auth.token_for_password",
    "openapi.openapi_json",
    "root",
    "enroll.install_sh",
    "enroll.seed_install_sh",
    "enroll.uninstall_sh",
    "enroll.seed_uninstall_sh",
    "enroll.agent_py",
    "enroll.seed_agent",
    "enroll.enroll",
    "artifacts.signed_file",
    "artifacts.public_service_file",
    "artifacts.public_init_file",
    "file_downloads.download",
}
RANK = {None: -1, "viewer": 0, "operator": 1, "admin": 2}


def _access(app, endpoint):
    return getattr(app.view_functions[endpoint], "_kernel_access", None)


def _fill(rule) -> str:
    return re.sub(
        r"<(?:[^:>]+:)?([^>]+)>", lambda m: "999999" if "id" in m.group(1) else "x", rule.rule
    )


def test_every_view_is_marked(app):
    unmarked = set(unguarded_endpoints(app)) - PUBLIC
    assert not unmarked, f"views without @role/@public: {sorted(unmarked)}"
    marked_public = {e for e in app.view_functions if _access(app, e) == "public"}
    assert marked_public <= PUBLIC, marked_public - PUBLIC


@pytest.mark.parametrize("who", [None, "viewer", "operator", "admin"])
def test_every_route_for_every_role(app, as_role, who):
    client = as_role(who) if who else None
    anon = app.test_client()
    for rule in app.url_map.iter_rules():
        need = _access(app, rule.endpoint)
        if need in (None, "public"):
            continue
        url = _fill(rule)
        meta = declared(app.view_functions[rule.endpoint])
        if meta and meta.produces == "text/event-stream" and RANK[who] >= RANK[need]:
            continue  # let in, an event stream never ends (tests/ui/test_status_stream.py)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            if client is None:
                resp = anon.open(url, method=method, json={})
            else:
                resp = client.call(method, url, json={})
            have = RANK[who]
            if have < 0:
                assert resp.status_code == 401, (method, url, resp.status_code)
            elif have < RANK[need]:
                assert resp.status_code == 403, (method, url, who, resp.status_code)
            else:
                assert resp.status_code not in (401, 403, 500), (
                    method,
                    url,
                    who,
                    resp.status_code,
                    resp.get_data(as_text=True)[:200],
                )

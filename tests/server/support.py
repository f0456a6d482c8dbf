"""Helpers shared by the server's and the services/status tests (plain functions, no fixtures)."""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings

from kernel.server.auth.credentials import new_token, token_hash
from kernel.server.auth.users import create_user
from kernel.server.components import components
from kernel.server.models.users import ApiToken

CONFORMANCE = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
]


def make_token(app: Any, name: str, role: str) -> str:
    """A user NAME with ROLE and an API token for it; returns the token."""
    with components(app).db.session() as s:
        user = create_user(s, name, role, "password-" + name)
        secret = new_token()
        s.add(ApiToken(user_id=user.id, name="test", token_hash=token_hash(secret)))
    return secret


def check_operation(app: Any, token: str, method: str, path: str, mode: Any, examples: int) -> None:
    """Generated input for one OpenAPI operation: never a 500, errors always
    ``{"error", "message"}``, and every answer as its schema says (status, content type,
    body). Raises hypothesis' Unsatisfiable when no input can be made."""
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    op = schema[path][method.lower()]
    headers = {"Authorization": f"Bearer {token}"}

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=op.as_strategy(generation_mode=mode))
    def check(case: Any) -> None:
        resp = case.call(headers={**headers, **(case.headers or {})})
        assert resp.status_code < 500, (case.body, case.query, case.path_parameters, resp.text)
        case.validate_response(resp, checks=CONFORMANCE)
        if resp.status_code >= 400 and path != "/healthz":
            body = resp.json()
            assert set(body) >= {"error", "message"}, body

    check()

"""API clients for tests: `Api` sends a bearer token through a Flask test client (in-process
app) or an httpx client (a real server), checks status codes, and answers with `Answer`,
which reads the same either way. Also: tokens for a role, waiting for a job, and the
OpenAPI-driven fuzz check."""

from __future__ import annotations

import time
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings

from kernel.server.auth.credentials import new_token, token_hash
from kernel.server.auth.users import create_user
from kernel.server.components import components
from kernel.server.models.users import ApiToken


class Answer:
    """A response of either client: ``status_code``, ``headers``, ``text``, ``json()`` (and the
    Flask names ``get_json()``, ``get_data()``, ``data``)."""

    def __init__(self, resp: Any) -> None:
        self._resp = resp
        self.status_code: int = resp.status_code
        self.headers = resp.headers
        flask = hasattr(resp, "get_data")
        self.data: bytes = resp.get_data() if flask else resp.content
        self.text: str = self.data.decode("utf-8", "replace")

    def json(self) -> Any:
        return self._resp.get_json() if hasattr(self._resp, "get_json") else self._resp.json()

    def get_json(self) -> Any:
        return self.json()

    def get_data(self, as_text: bool = False) -> Any:
        return self.text if as_text else self.data

    def __getattr__(self, name: str) -> Any:  # anything else the client's response has
        return getattr(self._resp, name)


class Api:
    def __init__(self, client: Any, token: str | None) -> None:
        self.client = client  # a Flask test client, or an httpx.Client with a base_url
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def call(self, method: str, url: str, expect: int | None = None, **kw: Any) -> Answer:
        headers = {**self.headers, **kw.pop("headers", {})}
        if hasattr(self.client, "open"):  # Flask
            resp = self.client.open(url, method=method, headers=headers, **kw)
        else:
            if "data" in kw and "content_type" in kw:
                headers["Content-Type"] = kw.pop("content_type")
            if "data" in kw:
                kw["content"] = kw.pop("data")
            resp = self.client.request(method, url, headers=headers, **kw)
        answer = Answer(resp)
        if expect is not None:
            assert answer.status_code == expect, (answer.status_code, answer.text)
        return answer

    def get(self, url: str, expect: int | None = 200, **kw: Any) -> Any:
        return self.call("GET", url, expect, **kw).json()

    def post(self, url: str, json: Any = None, expect: int | None = 200, **kw: Any) -> Any:
        return self.call("POST", url, expect, json=json, **kw).json()

    def patch(self, url: str, json: Any = None, expect: int | None = 200) -> Any:
        return self.call("PATCH", url, expect, json=json).json()

    def delete(self, url: str, expect: int | None = 200) -> Any:
        return self.call("DELETE", url, expect).json()

    def pages(self, url: str) -> list[Any]:
        """Every page of a paged list (``url`` has its query, e.g. ``?limit=5``), following
        each answer's ``next`` with ``&after=``; the answers, in order."""
        answers = [self.get(url)]
        while answers[-1]["next"] is not None:
            answers.append(self.get(f"{url}&after={answers[-1]['next']}"))
        return answers


def make_token(app: Any, name: str, role: str) -> str:
    """A user NAME with ROLE and an API token for it; returns the token."""
    with components(app).db.session() as s:
        user = create_user(s, name, role, "password-" + name)
        secret = new_token()
        s.add(ApiToken(user_id=user.id, name="test", token_hash=token_hash(secret)))
    return secret


def wait_job(api: Api, job_id: int, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = api.get(f"/api/v1/jobs/{job_id}?output=1")
        if job["state"] in ("finished", "cancelled"):
            return job  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} did not end: {job}")
        time.sleep(0.05)


CONFORMANCE = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
]


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
        # Our token wins over the Authorization schemathesis makes up for the security scheme
        # (a made-up one stops every request at 401; the roles and hostile-HTTP suites try
        # bad credentials).
        resp = case.call(headers={**(case.headers or {}), **headers})
        assert resp.status_code < 500, (case.body, case.query, case.path_parameters, resp.text)
        case.validate_response(resp, checks=CONFORMANCE)
        if resp.status_code >= 400 and path != "/healthz":
            body = resp.json()
            assert set(body) >= {"error", "message"}, body

    check()

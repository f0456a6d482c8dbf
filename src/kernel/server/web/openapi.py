"""The OpenAPI 3 document of the REST API (/api/v1/openapi.json), written by hand beside the
views; a test checks that every /api/v1 route is in it and feeds it generated bad input."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from kernel.server.auth.roles import ROLES
from kernel.server.jobs.states import JOB_STATES, RUN_STATES
from kernel.server.models.servers import SERVER_STATES
from kernel.server.web.access import public

bp = Blueprint("openapi", __name__)

NAME = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$"}
TAGS = {
    "type": "array",
    "items": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"},
}
ERROR = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
}
OBJ = {"type": "object"}


def _body(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    if required:
        schema["required"] = required
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _op(
    summary: str,
    *,
    ok: int = 200,
    body: dict[str, Any] | None = None,
    params: list[dict[str, Any]] | None = None,
    auth: bool = True,
    produces: str = "application/json",
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {
            str(ok): {
                "description": "success",
                "content": {produces: {"schema": OBJ}}
                if produces == "application/json"
                else {produces: {"schema": {"type": "string"}}},
            },
            "default": {"description": "error", "content": {"application/json": {"schema": ERROR}}},
        },
    }
    if body:
        op["requestBody"] = body
    if params:
        op["parameters"] = params
    if not auth:
        op["security"] = []
    return op


def _path_int(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    }


def _query(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema}


PAGE = [
    _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
    _query("before", {"type": "integer", "minimum": 1}),
]
TARGETS = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "servers": {"type": "array", "items": NAME},
        "tags": TAGS,
        "all": {"type": "boolean"},
    },
}
SERVER_FIELDS = {
    "name": NAME,
    "description": {"type": "string", "maxLength": 4000},
    "tags": TAGS,
    "agent_url": {"type": "string", "maxLength": 255},
    "agent_key": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"},
    "tls_fingerprint": {"type": "string"},
}


def document() -> dict[str, Any]:
    sid, jid = _path_int("server_id"), _path_int("job_id")
    paths: dict[str, Any] = {
        "/healthz": {"get": _op("liveness", auth=False, produces="text/plain")},
        "/api/v1/auth/token": {
            "post": _op(
                "trade user name + password for an API token",
                ok=201,
                auth=False,
                body=_body(
                    {
                        "username": {"type": "string"},
                        "password": {"type": "string"},
                        "name": {"type": "string", "maxLength": 64},
                    },
                    ["username", "password"],
                ),
            )
        },
        "/api/v1/me": {"get": _op("the calling user (and a CSRF token for cookie sessions)")},
        "/api/v1/tokens": {
            "get": _op("API tokens (yours; every user's for admins)"),
            "post": _op(
                "a new API token for yourself",
                ok=201,
                body=_body({"name": {"type": "string", "maxLength": 64}}),
            ),
        },
        "/api/v1/tokens/{token_id}": {
            "delete": _op("revoke a token", params=[_path_int("token_id")])
        },
        "/api/v1/users": {
            "get": _op("users (admin)"),
            "post": _op(
                "add a user (admin)",
                ok=201,
                body=_body(
                    {
                        "name": NAME,
                        "role": {"type": "string", "enum": list(ROLES)},
                        "password": {"type": "string", "minLength": 8},
                    },
                    ["name", "role", "password"],
                ),
            ),
        },
        "/api/v1/users/{user_id}": {
            "patch": _op(
                "change role, password, disabled (admin)",
                params=[_path_int("user_id")],
                body=_body(
                    {
                        "role": {"type": "string", "enum": list(ROLES)},
                        "password": {"type": "string", "minLength": 8},
                        "disabled": {"type": "boolean"},
                    }
                ),
            )
        },
        "/api/v1/audit": {
            "get": _op(
                "audit log, newest first (admin)",
                params=[
                    *PAGE,
                    _query("action", {"type": "string"}),
                    _query("actor", {"type": "string"}),
                ],
            )
        },
        "/api/v1/servers": {
            "get": _op(
                "servers",
                params=[
                    _query("tag", {"type": "string"}),
                    _query("removed", {"type": "string", "enum": ["1"]}),
                ],
            ),
            "post": _op(
                "add a server: by agent URL + key, or pending with an install command",
                ok=201,
                body=_body(SERVER_FIELDS, ["name"]),
            ),
        },
        "/api/v1/servers/{server_id}": {
            "get": _op("one server", params=[sid]),
            "patch": _op(
                "edit name, URL, key, description, tags", params=[sid], body=_body(SERVER_FIELDS)
            ),
            "delete": _op("remove (stops future jobs, keeps history)", params=[sid]),
        },
        "/api/v1/servers/{server_id}/enroll-token": {
            "post": _op("a fresh one-time install command", ok=201, params=[sid])
        },
        "/api/v1/servers/{server_id}/check": {
            "post": _op("run the environment check again", params=[sid])
        },
        "/api/v1/servers/{server_id}/init": {
            "get": _op("init scripts and their records on this server", params=[sid]),
            "post": _op(
                "continue pending init scripts, or run one by name",
                ok=202,
                params=[sid],
                body=_body({"script": {"type": "string"}}),
            ),
        },
        "/api/v1/jobs": {
            "get": _op(
                "jobs, newest first",
                params=[*PAGE, _query("state", {"type": "string", "enum": list(JOB_STATES)})],
            ),
            "post": _op(
                "run a command on servers chosen by name, tag or all",
                ok=201,
                body=_body(
                    {
                        "cmd": {"type": "string", "minLength": 1},
                        "stdin": {"type": "string"},
                        "env": {"type": "object", "additionalProperties": {"type": "string"}},
                        "cwd": {"type": "string"},
                        "timeout": {"type": "number", "minimum": 0.1},
                        "title": {"type": "string", "maxLength": 255},
                        "targets": TARGETS,
                    },
                    ["cmd", "targets"],
                ),
            ),
        },
        "/api/v1/jobs/{job_id}": {
            "get": _op(
                "a job with its runs",
                params=[jid, _query("output", {"type": "string", "enum": ["1"]})],
            )
        },
        "/api/v1/jobs/{job_id}/runs/{run_id}": {
            "get": _op(
                "one run with its output",
                params=[
                    jid,
                    {
                        "name": "run_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    },
                ],
            )
        },
        "/api/v1/jobs/{job_id}/cancel": {
            "post": _op("cancel (its runs on the agents too)", params=[jid])
        },
        "/api/v1/jobs/{job_id}/rerun": {
            "post": _op("a new job for the runs that did not succeed", ok=201, params=[jid])
        },
        "/api/v1/jobs/{job_id}/events": {
            "get": _op(
                "live events (text/event-stream); see docs/api.md",
                params=[jid],
                produces="text/event-stream",
            )
        },
        "/agent/enroll": {
            "post": _op(
                "an installed agent joins with its one-time token",
                auth=False,
                body=_body(
                    {
                        "token": {"type": "string"},
                        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                        "hostname": {"type": "string"},
                        "server": NAME,
                    },
                    ["token"],
                ),
            )
        },
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Kernel server API",
            "version": "1",
            "description": "See docs/api.md. Errors are {error, message}.",
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": "kernel_session"},
            },
            "schemas": {
                "Error": ERROR,
                "RunState": {"type": "string", "enum": list(RUN_STATES)},
                "ServerState": {"type": "string", "enum": list(SERVER_STATES)},
            },
        },
        "security": [{"bearer": []}, {"cookie": []}],
        "paths": {**paths, **services_and_status_paths()},
    }


def services_and_status_paths() -> dict[str, Any]:
    """The OpenAPI paths of services_api and status_api (openapi.py's helpers and shapes)."""
    from kernel.server.core.shell import MAX_LOG_LINES
    from kernel.server.services.operations import OPERATIONS

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


@bp.get("/api/v1/openapi.json")
@public
def openapi_json() -> Response:
    return jsonify(document())

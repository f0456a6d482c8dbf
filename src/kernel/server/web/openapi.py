"""The OpenAPI 3.1 document of the REST API (/api/v1/openapi.json), built from the app itself:
every route whose view is declared with `@endpoint` (web/endpoint.py), its path parameters
from the route, its body, query and answers from their pydantic declarations, and who may
call it from its access mark. Nothing is written twice, so the document cannot drift from the
code; a test fails for any /api/v1 route without a declaration."""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from kernel.server.core.inputs import MAX_ID
from kernel.server.web.access import public
from kernel.server.web.endpoint import Endpoint, declared, endpoint

bp = Blueprint("openapi", __name__)
REF = "#/components/schemas/{model}"
ERROR = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
}
_ARG = re.compile(r"<(?:([a-z]+)(?:\([^)]*\))?:)?([A-Za-z_]\w*)>")


def document(app: Flask) -> dict[str, Any]:
    ops = []
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        meta = declared(app.view_functions[rule.endpoint])
        if meta is None:
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            ops.append((rule, method, meta, app.view_functions[rule.endpoint]))
    models: list[tuple[type[BaseModel], Any]] = []
    for _rule, _method, meta, _view in ops:
        if meta.body is not None:
            models.append((meta.body, "validation"))
        models += [(m, "serialization") for m in meta.answers.values() if m is not None]
    refs, defs = models_json_schema(sorted(set(models), key=lambda m: m[0].__name__),
                                    ref_template=REF)  # fmt: skip
    schemas = {**defs.get("$defs", {}), "Error": ERROR}
    paths: dict[str, Any] = {}
    for rule, method, meta, view in ops:
        path = _ARG.sub(r"{\2}", rule.rule)
        paths.setdefault(path, {})[method.lower()] = _operation(
            rule, meta, view, refs, rule.endpoint
        )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Kernel server API",
            "version": "1",
            "description": "See docs/api.md. Errors are {error, message}; roles are "
            "viewer < operator < admin (x-kernel-role).",
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": "kernel_session"},
            },
            "schemas": schemas,
        },
        "security": [{"bearer": []}, {"cookie": []}],
        "paths": paths,
    }


def _operation(
    rule: Any, meta: Endpoint, view: Any, refs: dict[Any, Any], name: str
) -> dict[str, Any]:
    access = getattr(view, "_kernel_access", None)
    op: dict[str, Any] = {"operationId": name, "summary": meta.summary}
    if meta.description:
        op["description"] = meta.description
    params = [_path_param(conv, arg) for conv, arg in _ARG.findall(rule.rule)]
    if meta.query is not None:
        params += _query_params(meta.query)
    if params:
        op["parameters"] = params
    if meta.consumes is not None:
        op["requestBody"] = {
            "required": False,
            "content": {meta.consumes: {"schema": {"type": "string", "format": "binary"}}},
        }
    if meta.body is not None:
        op["requestBody"] = {
            "required": meta.body_required,
            "content": {"application/json": {"schema": refs[(meta.body, "validation")]}},
        }
    responses: dict[str, Any] = {}
    for status, model in meta.answers.items():
        if meta.produces != "application/json":
            content = {meta.produces: {"schema": {"type": "string"}}}
        elif model is None:
            content = {"application/json": {"schema": {"type": "object"}}}
        else:
            content = {"application/json": {"schema": refs[(model, "serialization")]}}
        responses[str(status)] = {"description": "success", "content": content}
    responses["default"] = {
        "description": "error",
        "content": {"application/json": {"schema": {"$ref": REF.format(model="Error")}}},
    }
    op["responses"] = responses
    if access == "public":
        op["security"] = []
    elif access:
        op["x-kernel-role"] = access
    return op


def _path_param(converter: str, name: str) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if converter == "int":
        schema = {"type": "integer", "minimum": 1, "maximum": MAX_ID}
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _query_params(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema()
    required = set(schema.get("required", []))
    return [
        {"name": field, "in": "query", "required": field in required, "schema": _not_null(prop)}
        for field, prop in schema.get("properties", {}).items()
    ]


def _not_null(prop: dict[str, Any]) -> dict[str, Any]:
    """A query argument is absent or a value; "may be null" means "may be left out"."""
    branches = [b for b in prop.get("anyOf", []) if b.get("type") != "null"]
    if len(branches) == 1:
        return {**{k: v for k, v in prop.items() if k not in ("anyOf", "default")}, **branches[0]}
    return prop


@bp.get("/api/v1/openapi.json")
@public
@endpoint("this document")
def openapi_json() -> Response:
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    if "kernel.openapi" not in app.extensions:  # the routes are fixed once the app is made
        app.extensions["kernel.openapi"] = document(app)
    return jsonify(app.extensions["kernel.openapi"])

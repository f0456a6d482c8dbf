"""The services catalogue and its operations (/api/v1/services).

The catalogue is scanned once and kept until "refresh" rescans it; an operation always reads
its service folder afresh, so it sends the scripts as they are on disk now. Every operation
is a job (kind ``service``) with one run per server; see oplock.py for the one-at-a-time rule.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from kernel.exceptions import InvalidInput, NotFound
from kernel.server.core import shell
from kernel.server.core.settings import public_url
from kernel.server.jobs.api import _parse_targets
from kernel.server.jobs.service import create_job, job_json, resolve_targets
from kernel.server.services import catalog, oplock
from kernel.server.services import operations as service_ops
from kernel.server.services.artifacts import ArtifactConfigError, service_url_for
from kernel.server.services.hosts import catalogue_json, service_hosts, service_json
from kernel.server.status.queries import host_rows
from kernel.server.web import audit, context
from kernel.server.web.access import actor, role
from kernel.server.web.params import get_number, json_body, reject_unknown

bp = Blueprint("services", __name__, url_prefix="/api/v1/services")


def _lookup(name: str) -> catalog.Service:
    """The service folder as it is on disk now. A name that is not allowed is refused before
    anything else (it never reaches a path or a shell line)."""
    if not shell.is_valid_name(name):
        raise InvalidInput(
            f"service name {name[:80]!r} is not allowed: names must match {shell.NAME_PATTERN}"
        )
    folder = Path(current_app.config["DATA_DIR"]) / "service" / name
    if not folder.is_dir():
        raise NotFound(f"no service {name!r} in the catalogue")
    return catalog.scan_service(folder)


# -- views ------------------------------------------------------------------------------------
@bp.get("")
@role("viewer")
def list_services() -> Response:
    cache = context.catalogue()
    return jsonify(catalogue_json(cache.get(), host_rows(context.session()), cache.scanned_at))


@bp.post("/refresh")
@role("operator")
def refresh() -> Response:
    """Rescan the service folder ("Refresh services")."""
    cache = context.catalogue()
    cat = cache.refresh()
    broken = [svc.name for svc in cat if svc.problems]
    audit.note("services.refresh", target="services", services=len(cat), broken=broken[:50])
    return jsonify(catalogue_json(cat, host_rows(context.session()), cache.scanned_at))


@bp.get("/<path:name>/hosts")
@role("viewer")
def hosts_of(name: str) -> Response:
    svc = _lookup(name)
    return jsonify(
        {
            "service": svc.name,
            "unit": svc.unit or None,
            **service_hosts(svc, host_rows(context.session())),
        }
    )


@bp.get("/<path:name>")
@role("viewer")
def get_service(name: str) -> Response:
    svc = _lookup(name)
    return jsonify(
        {**service_json(svc, detail=True), **service_hosts(svc, host_rows(context.session()))}
    )


@bp.post("/<path:name>/<op>")
@role("operator")
def operate(name: str, op: str) -> tuple[Response, int]:
    """deploy/remove/start/stop/restart/enable/disable/status/logs on the chosen servers."""
    if op not in service_ops.OPERATIONS:
        raise NotFound(f"unknown operation {op[:40]!r}; known: {', '.join(service_ops.OPERATIONS)}")
    svc = _lookup(name)
    data = json_body()
    reject_unknown(data, {"targets", "lines", "timeout"})
    lines = _lines(data, op)
    spec = _parse_targets(data.get("targets"))
    command = _command(op, svc, lines)
    if "timeout" in data:
        timeout = get_number(data, "timeout", command.timeout, 1, 7 * 86400)
        command = _with_timeout(command, timeout)
    audit.note(f"service.{op}", target=f"service {svc.name}", service=svc.name, op=op)
    s = context.session()
    servers, skipped = resolve_targets(s, spec)
    audit.note(hosts=[srv.name for srv in servers])
    with oplock.guard, context.runner().admission(len(servers)) as admission:
        oplock.ensure_free(s, {srv.id: srv.name for srv in servers}, svc.name)
        job = create_job(
            s,
            command,
            servers,
            created_by=actor(),
            kind=oplock.KIND,
            targets=spec,
            meta={"service": svc.name, "op": op, "unit": svc.unit},
            running=admission.direct,
        )
        audit.note(job=job.id)
        s.commit()
    admission.launch(job, servers)
    return jsonify({**job_json(job, job.runs), "skipped": skipped}), 201


def _command(op: str, svc: catalog.Service, lines: int) -> shell.RemoteCommand:
    config = current_app.config
    kernel_url = public_url(config, request.url_root)
    service_url = ""
    if op in ("deploy", "remove"):
        try:
            service_url = service_url_for(config, svc.name, kernel_url=kernel_url)
        except ArtifactConfigError as e:
            raise InvalidInput(str(e)) from None
    try:
        return service_ops.build(
            op, svc, kernel_url=kernel_url, service_url=service_url, lines=lines
        )
    except service_ops.OperationRefused as e:
        raise InvalidInput(str(e)) from None


def _lines(data: dict[str, Any], op: str) -> int:
    value = data.get("lines", service_ops.DEFAULT_LOG_LINES)
    if "lines" in data and op != "logs":
        raise InvalidInput("'lines' is only for logs")
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput("'lines' must be an integer")
    if not 1 <= value <= shell.MAX_LOG_LINES:
        raise InvalidInput(f"'lines' must be between 1 and {shell.MAX_LOG_LINES}")
    return value


def _with_timeout(command: shell.RemoteCommand, timeout: float) -> shell.RemoteCommand:
    return replace(command, timeout=timeout)

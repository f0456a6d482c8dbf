"""The routes of the services catalogue and its operations (/api/v1/services), and the
service artifacts (signed URLs; with PUBLIC_ARTIFACTS the seed's public paths too) served to
deploy scripts with plain-text errors for wget and curl (the rules are in artifacts.py).

The catalogue is scanned once and kept until "refresh" rescans it; an operation always reads
its service folder afresh, so it sends the scripts as they are on disk now. Every operation
is a job (kind ``service``) with one run per server; see oplock.py for the one-at-a-time rule.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from flask import Blueprint, Response, current_app, jsonify, request, send_file

from kernel.exceptions import InvalidInput, NotFound
from kernel.names import NAME_RULE, is_valid_name
from kernel.server.core import shell
from kernel.server.core.settings import public_url
from kernel.server.jobs.schemas import JobAnswer
from kernel.server.jobs.service import create_job, resolve_targets
from kernel.server.jobs.shapes import job_json
from kernel.server.models.jobs import Job
from kernel.server.services import catalog, oplock
from kernel.server.services import operations as service_ops
from kernel.server.services.artifacts import (
    URL_PREFIX,
    mimetype_of,
    resolve,
    service_url_for,
    signing_key,
    verify,
)
from kernel.server.services.hosts import catalogue_json, service_hosts, service_json
from kernel.server.services.schemas import (
    CatalogueAnswer,
    Operate,
    ServiceDetailAnswer,
    ServiceHostsAnswer,
)
from kernel.server.status.queries import host_rows
from kernel.server.web import audit, context
from kernel.server.web.access import actor, public, role
from kernel.server.web.endpoint import endpoint

bp = Blueprint("services", __name__, url_prefix="/api/v1/services")


def lookup(name: str) -> catalog.Service:
    """The service folder as it is on disk now. A name that is not allowed is refused before
    anything else (it never reaches a path or a shell line)."""
    if not is_valid_name(name):
        raise InvalidInput(f"service name {name[:80]!r} is not allowed: names {NAME_RULE}")
    folder = Path(current_app.config["DATA_DIR"]) / "service" / name
    if not folder.is_dir():
        raise NotFound(f"no service {name!r} in the catalogue")
    return catalog.scan_service(folder)


# -- views ------------------------------------------------------------------------------------
@bp.get("")
@role("viewer")
@endpoint("the services catalogue, each with its problems", answers={200: CatalogueAnswer})
def list_services() -> Response:
    cache = context.catalogue()
    return jsonify(catalogue_json(cache.get(), host_rows(context.session()), cache.scanned_at))


@bp.post("/refresh")
@role("operator")
@endpoint("rescan the service folder", answers={200: CatalogueAnswer})
def refresh() -> Response:
    """Rescan the service folder ("Refresh services")."""
    cat = rescan()
    scanned_at = context.catalogue().scanned_at
    return jsonify(catalogue_json(cat, host_rows(context.session()), scanned_at))


def rescan() -> catalog.Catalogue:
    """Rescan the service folder, audited (also the console's "Refresh services")."""
    cat = context.catalogue().refresh()
    broken = [svc.name for svc in cat if svc.problems]
    audit.note("services.refresh", target="services", services=len(cat), broken=broken[:50])
    return cat


@bp.get("/<path:name>/hosts")
@role("viewer")
@endpoint("where the service is installed / active / failed", answers={200: ServiceHostsAnswer})
def hosts_of(name: str) -> Response:
    svc = lookup(name)
    return jsonify(
        {
            "service": svc.name,
            "unit": svc.unit or None,
            **service_hosts(svc, host_rows(context.session())),
        }
    )


@bp.get("/<path:name>")
@role("viewer")
@endpoint("one service: scripts, artifacts, hosts", answers={200: ServiceDetailAnswer})
def get_service(name: str) -> Response:
    svc = lookup(name)
    return jsonify(
        {**service_json(svc, detail=True), **service_hosts(svc, host_rows(context.session()))}
    )


@bp.post("/<path:name>/<op>")
@role("operator")
@endpoint("run an operation as a job (409 while another runs on a server)", body=Operate,
          answers={201: JobAnswer})  # fmt: skip
def operate(name: str, op: str, body: Operate) -> tuple[Response, int]:
    """deploy/remove/start/stop/restart/enable/disable/status/logs on the chosen servers."""
    job, skipped = start_operation(name, op, body)
    return jsonify({**job_json(job, job.runs), "skipped": skipped}), 201


def start_operation(name: str, op: str, body: Operate) -> tuple[Job, list[str]]:
    """Create and launch a service operation's job (also the console's buttons): the job and
    the chosen servers skipped as not joined."""
    if op not in service_ops.OPERATIONS:
        raise NotFound(f"unknown operation {op[:40]!r}; known: {', '.join(service_ops.OPERATIONS)}")
    svc = lookup(name)
    if body.lines is not None and op != "logs":
        raise InvalidInput("'lines' is only for logs")
    command = _command(op, svc, body.lines or service_ops.DEFAULT_LOG_LINES)
    if body.timeout is not None:
        command = replace(command, timeout=body.timeout)
    spec = body.targets.spec()
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
            owner=admission.owner,
        )
        audit.note(job=job.id)
        s.commit()
    admission.launch(job, servers)
    return job, skipped


def _command(op: str, svc: catalog.Service, lines: int) -> shell.RemoteCommand:
    config = current_app.config
    kernel_url = public_url(config, request.url_root)
    service_url = ""
    if op in ("deploy", "remove"):
        service_url = service_url_for(config, svc.name, kernel_url=kernel_url)
    return service_ops.build(op, svc, kernel_url=kernel_url, service_url=service_url, lines=lines)


# ------------------------------------------------------------------------------------------
artifacts_bp = Blueprint("artifacts", __name__)


def _text(status: int, msg: str) -> Response:
    # Plain text: the clients are wget/curl in scripts, and this reads well in their stderr.
    return Response(f"{status} {msg}\n", status=status, mimetype="text/plain")


def _data_dir() -> Path:
    return Path(current_app.config["DATA_DIR"])


def _serve(root: Path, relpath: str) -> Response:
    path = resolve(root, relpath)
    if path is None:
        return _text(404, "not found")
    resp = send_file(path, mimetype=mimetype_of(path.name), conditional=True, max_age=0)
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp


@artifacts_bp.route(f"{URL_PREFIX}/<name>/<expires>/<signature>/<path:relpath>", methods=["GET"])
@public
def signed_file(name: str, expires: str, signature: str, relpath: str) -> Response:
    why = verify(signing_key(current_app.config), name, expires, signature, now=time.time())
    if why is not None:
        return _text(403, f"forbidden: {why}")
    resp = _serve(_data_dir() / "service" / name, relpath)
    resp.headers["Cache-Control"] = "private, no-store"
    return resp


@artifacts_bp.route("/static/service/<name>/<path:relpath>", methods=["GET"])
@public
def public_service_file(name: str, relpath: str) -> Response:
    if not current_app.config["PUBLIC_ARTIFACTS"] or not is_valid_name(name):
        return _text(404, "not found")
    return _serve(_data_dir() / "service" / name, relpath)


@artifacts_bp.route("/static/init/<path:relpath>", methods=["GET"])
@public
def public_init_file(relpath: str) -> Response:
    if not current_app.config["PUBLIC_ARTIFACTS"]:
        return _text(404, "not found")
    return _serve(_data_dir() / "init", relpath)


blueprints = (bp, artifacts_bp)

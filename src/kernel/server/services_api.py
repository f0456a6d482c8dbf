"""The services catalogue and its operations (/api/v1/services).

The catalogue is scanned once and kept until "refresh" rescans it; an operation always reads
its service folder afresh, so it sends the scripts as they are on disk now. Every operation
is a job (kind ``service``) with one run per server; see oplock.py for the one-at-a-time rule.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from sqlalchemy import select
from sqlalchemy.orm import Session

from . import audit, catalog, context, oplock, service_ops, shell
from .access import actor, role
from .artifacts import ArtifactConfigError, service_url_for
from .config import public_url
from .errors import BadRequest, NotFound
from .health import service_spread
from .jobs import create_job, job_json, resolve_targets
from .jobs_api import _parse_targets
from .models import Server
from .params import get_number, json_body, reject_unknown
from .probe import UnitState
from .status_models import HostStatus

bp = Blueprint("services", __name__, url_prefix="/api/v1/services")
EXTENSION = "kernel.catalogue"


class CatalogueCache:
    """The last scan of ``<data dir>/service`` (thread-safe; the poller reads it too)."""

    def __init__(self, service_dir: Path) -> None:
        self.service_dir = service_dir
        self._lock = threading.Lock()
        self._cat: catalog.Catalogue | None = None
        self.scanned_at = 0.0

    def get(self) -> catalog.Catalogue:
        with self._lock:
            if self._cat is None:
                self._scan()
            assert self._cat is not None
            return self._cat

    def refresh(self) -> catalog.Catalogue:
        with self._lock:
            self._scan()
            assert self._cat is not None
            return self._cat

    def _scan(self) -> None:
        self._cat = catalog.scan(self.service_dir)
        self.scanned_at = time.time()


def install_cache(app: Flask) -> CatalogueCache:
    cache = CatalogueCache(Path(app.config["DATA_DIR"]) / "service")
    app.extensions[EXTENSION] = cache
    return cache


def current_catalogue() -> catalog.Catalogue:
    cache: CatalogueCache = current_app.extensions[EXTENSION]
    return cache.get()


# -- reading host states --------------------------------------------------------------------
def unit_state(data: Any) -> UnitState | None:
    """A stored unit state (probe.report_json's shape) back as a UnitState."""
    if not isinstance(data, dict):
        return None
    return UnitState(
        unit=str(data.get("unit", "")),
        load_state=str(data.get("load_state", "")),
        active_state=str(data.get("active_state", "")),
        sub_state=str(data.get("sub_state", "")),
        unit_file_state=str(data.get("unit_file_state", "")),
    )


def host_rows(s: Session) -> list[tuple[Server, HostStatus | None]]:
    """Live joined servers with their last status (None before the first probe)."""
    rows = s.execute(
        select(Server, HostStatus)
        .outerjoin(HostStatus, HostStatus.server_id == Server.id)
        .where(Server.removed_at.is_(None), Server.agent_url.is_not(None))
        .order_by(Server.name)
    ).all()
    return [(srv, st) for srv, st in rows]


def service_hosts(svc: catalog.Service, rows: list[tuple[Server, HostStatus | None]]) -> Any:
    """Where one service's unit is installed/active/failed, and its state on each host."""
    states: dict[str, dict[str, UnitState]] = {}
    hosts = []
    for srv, st in rows:
        raw = (st.units or {}).get(svc.unit) if st is not None and svc.unit else None
        us = unit_state(raw)
        if us is not None:
            states[srv.name] = {svc.unit: us}
        hosts.append(
            {
                "server": srv.name,
                "server_id": srv.id,
                "health": st.state if st is not None else "unknown",
                "probed_at": st.to_json()["probed_at"] if st is not None else None,
                "unit": raw if isinstance(raw, dict) else None,
            }
        )
    spread = service_spread(svc.unit, states) if svc.unit else None
    return {
        "installed": list(spread.installed) if spread else [],
        "active": list(spread.active) if spread else [],
        "failed": list(spread.failed) if spread else [],
        "hosts": hosts,
    }


def service_json(svc: catalog.Service, *, detail: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": svc.name,
        "title": svc.title,
        "display_name": svc.display_name,
        "description": svc.description,
        "unit": svc.unit or None,
        "deployable": svc.deployable,
        "problems": list(svc.problems),
    }
    if detail:
        out["scripts"] = {n: sc.sha256 for n, sc in sorted(svc.scripts.items())}
        out["artifacts"] = [{"path": a.path, "size": a.size} for a in svc.artifacts]
    return out


def catalogue_json(cat: catalog.Catalogue, s: Session) -> dict[str, Any]:
    rows = host_rows(s)
    services = []
    for svc in cat:
        spread = service_hosts(svc, rows)
        item = service_json(svc)
        item.update({k: spread[k] for k in ("installed", "active", "failed")})
        services.append(item)
    cache: CatalogueCache = current_app.extensions[EXTENSION]
    return {
        "services": services,
        "problems": list(cat.problems),
        "scanned_at": round(cache.scanned_at, 3),
    }


def _lookup(name: str) -> catalog.Service:
    """The service folder as it is on disk now. A name that is not allowed is refused before
    anything else (it never reaches a path or a shell line)."""
    if not shell.is_valid_name(name):
        raise BadRequest(
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
    return jsonify(catalogue_json(current_catalogue(), context.session()))


@bp.post("/refresh")
@role("operator")
def refresh() -> Response:
    """Rescan the service folder ("Refresh services")."""
    cache: CatalogueCache = current_app.extensions[EXTENSION]
    cat = cache.refresh()
    broken = [svc.name for svc in cat if svc.problems]
    audit.note("services.refresh", target="services", services=len(cat), broken=broken[:50])
    return jsonify(catalogue_json(cat, context.session()))


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
            service_url = service_url_for({**config, "KERNEL_URL": kernel_url}, svc.name)
        except ArtifactConfigError as e:
            raise BadRequest(str(e)) from None
    try:
        return service_ops.build(
            op, svc, kernel_url=kernel_url, service_url=service_url, lines=lines
        )
    except service_ops.OperationRefused as e:
        raise BadRequest(str(e)) from None


def _lines(data: dict[str, Any], op: str) -> int:
    value = data.get("lines", service_ops.DEFAULT_LOG_LINES)
    if "lines" in data and op != "logs":
        raise BadRequest("'lines' is only for logs")
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest("'lines' must be an integer")
    if not 1 <= value <= shell.MAX_LOG_LINES:
        raise BadRequest(f"'lines' must be between 1 and {shell.MAX_LOG_LINES}")
    return value


def _with_timeout(command: shell.RemoteCommand, timeout: float) -> shell.RemoteCommand:
    return replace(command, timeout=timeout)

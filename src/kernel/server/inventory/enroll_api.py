"""Joining over HTTP (ARCHITECTURE.md §3): the served install and uninstall scripts and agent
file (the seed's /static/agent/* paths too), and ``POST /agent/enroll``."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request
from sqlalchemy import update

from kernel.exceptions import Conflict, NotFound
from kernel.server.core.db import utcnow
from kernel.server.core.settings import public_url
from kernel.server.inventory import enrollment, initflow
from kernel.server.inventory.envcheck import check_agent
from kernel.server.inventory.schemas import Enroll, Enrolled
from kernel.server.models.servers import EnrollToken, Server
from kernel.server.web import audit, context
from kernel.server.web.access import public
from kernel.server.web.endpoint import endpoint

bp = Blueprint("enroll", __name__)


def _base() -> str:
    return public_url(current_app.config, request.host_url)


def _text(body: bytes | str, name: str) -> Response:
    resp = Response(body, mimetype="text/plain")
    resp.headers["Content-Disposition"] = f"inline; filename={name}"
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.get("/agent/install.sh")
@public
def install_sh() -> Response:
    token = request.args.get("token")
    if token is None:
        return _text(enrollment.install_script(_base()), "install.sh")
    with context.db().session() as s:
        _row, srv = enrollment.live_token(s, token)
        key = srv.agent_key
    base = _base()
    allow = enrollment.allow_ips_for(base, current_app.config.get("AGENT_ALLOW_IPS"))
    return _text(enrollment.install_script(base, token, key, allow), "install.sh")


@bp.get("/static/agent/install.sh")
@public
def seed_install_sh() -> Response:
    """The seed's way: install with a fresh local key (printed), then add by URL + key."""
    return _text(enrollment.install_script(_base()), "install.sh")


@bp.get("/agent/uninstall.sh")
@public
def uninstall_sh() -> Response:
    return _text(enrollment.package_file("deploy", "uninstall.sh"), "uninstall.sh")


@bp.get("/static/agent/uninstall.sh")
@public
def seed_uninstall_sh() -> Response:
    return _text(enrollment.package_file("deploy", "uninstall.sh"), "uninstall.sh")


@bp.get("/agent/kernel-agent.py")
@public
def agent_py() -> Response:
    return _text(enrollment.agent_file(), "kernel-agent.py")


@bp.get("/static/agent/kernel")
@public
def seed_agent() -> Response:
    return _text(enrollment.agent_file(), "kernel")


@bp.post("/agent/enroll")
@public
@endpoint("an installed agent joins with its one-time token", body=Enroll,
          answers={200: Enrolled})  # fmt: skip
def enroll(body: Enroll) -> Response:
    """Called by install.sh on the host: the agent answers on the address the request came
    from, at ``port``; the token is spent only once the agent has answered the check."""
    token, port, hostname, claimed = body.token, body.port, body.hostname, body.server
    audit.note("server.enroll", target=claimed or "", hostname=hostname)
    with context.db().session() as s:
        row, srv = enrollment.live_token(s, token)
        token_id, server_id, name, key = row.id, srv.id, srv.name, srv.agent_key
    audit.note(target=name, hosts=[name])
    if claimed is not None and claimed != name:
        raise Conflict(f"this token is for server {name!r}, not {claimed!r}")
    url = enrollment.agent_url_from(request.remote_addr, port)
    facts = check_agent(url, key, timeout=float(current_app.config["AGENT_CONNECT_TIMEOUT"]) * 2)
    if hostname:
        facts["hostname"] = hostname
    s = context.session()
    now = utcnow()
    consumed = s.execute(
        update(EnrollToken)
        .where(
            EnrollToken.id == token_id, EnrollToken.used_at.is_(None), EnrollToken.expires_at > now
        )
        .values(used_at=now)
    )
    if consumed.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict("this enrollment token has already been used")
    srv2 = s.get(Server, server_id)
    if srv2 is None or srv2.removed_at is not None:
        raise NotFound("this token's server has been removed")
    srv2.agent_url, srv2.facts, srv2.last_seen = url, facts, now
    srv2.state, srv2.last_error = "online", None
    job = initflow.start(s, srv2, current_app.config, created_by=f"enroll:{name}")
    s.commit()
    context.server_joined(srv2.id)
    return jsonify(
        {
            "server": name,
            "agent_url": url,
            "state": srv2.state,
            "init_job_id": job.id if job else None,
        }
    )

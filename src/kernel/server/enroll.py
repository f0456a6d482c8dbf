"""Joining servers (ARCHITECTURE.md §3): one-time enrollment tokens, the served install and
uninstall scripts and agent file, and ``POST /agent/enroll``.

The token is the only credential of an enrolling host: it is stored hashed, expires, is
consumed atomically (a conditional UPDATE), and is only consumed once the agent has answered
with its key — so a failed attempt writes nothing and can be retried with the same token.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import shlex
import socket
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, current_app, jsonify, request
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from . import audit, context, initflow
from .access import public
from .config import public_url
from .db import utcnow
from .envcheck import check_agent
from .errors import BadRequest, Conflict, Forbidden, Gone, NotFound
from .models import EnrollToken, Server
from .params import get_name, get_str, json_body, reject_unknown
from .security import new_token, token_hash

bp = Blueprint("enroll", __name__)


# -- tokens --------------------------------------------------------------------------------------
def issue_token(s: Session, srv: Server) -> tuple[str, dt.datetime]:
    """A fresh token for ``srv``; earlier ones stop working. The caller commits."""
    revoke_tokens(s, srv)
    secret = new_token("ke_")
    expires = utcnow() + dt.timedelta(seconds=int(current_app.config["ENROLL_TOKEN_TTL"]))
    s.add(EnrollToken(server_id=srv.id, token_hash=token_hash(secret), expires_at=expires))
    s.flush()
    return secret, expires


def revoke_tokens(s: Session, srv: Server) -> None:
    s.execute(delete(EnrollToken).where(EnrollToken.server_id == srv.id))


def install_command(base: str, token: str) -> str:
    # Plain `| bash`: the script takes root itself (sudo only when not root already), so the
    # same line works in a root shell on a minimal host without sudo.
    return f"curl -fsSL {shlex.quote(f'{base}/agent/install.sh?token={token}')} | bash"


def enroll_info(token: str, expires: dt.datetime) -> dict[str, Any]:
    base = public_url(current_app.config, request.host_url)
    return {
        "token": token,
        "expires_at": expires.isoformat().replace("+00:00", "Z"),
        "command": install_command(base, token),
    }


def _live_token(s: Session, token: str) -> tuple[EnrollToken, Server]:
    """The token's row and server, or the precise reason it cannot be used."""
    if not token or len(token) > 200:
        raise Forbidden("unknown enrollment token")
    row = s.scalars(select(EnrollToken).where(EnrollToken.token_hash == token_hash(token))).first()
    if row is None:
        raise Forbidden("unknown enrollment token (never issued, or replaced by a newer one)")
    srv = s.get(Server, row.server_id)
    if srv is None or srv.removed_at is not None:
        raise Conflict("this token's server has been removed")
    if row.used_at is not None:
        raise Conflict("this enrollment token has already been used")
    if row.expires_at <= utcnow():
        raise Gone("this enrollment token has expired; ask for a new install command")
    return row, srv


# -- served files --------------------------------------------------------------------------------
@cache
def _package_file(*parts: str) -> bytes:
    return resources.files("kernel").joinpath(*parts).read_bytes()


def agent_file() -> bytes:
    return _package_file("agent.py")


def _text(body: bytes | str, name: str) -> Response:
    resp = Response(body, mimetype="text/plain")
    resp.headers["Content-Disposition"] = f"inline; filename={name}"
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _allow_ips(base: str) -> str:
    """The address(es) agents will see the server connect from (for ``allow_ips``)."""
    configured = current_app.config.get("AGENT_ALLOW_IPS")
    if configured:
        return str(configured)
    host = urlsplit(base).hostname or ""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return ""
    return ",".join(sorted({str(i[4][0]) for i in infos}))


def install_script(token: str | None, key: str | None) -> str:
    """The packaged install.sh with this server's values prepended as defaults."""
    base = public_url(current_app.config, request.host_url)
    values = {
        "KERNEL_URL": base,
        "KERNEL_AGENT_SOURCE": f"{base}/agent/kernel-agent.py",
        "KERNEL_AGENT_SHA256": hashlib.sha256(agent_file()).hexdigest(),
    }
    if token and key:
        values["KERNEL_AGENT_KEY"] = key
        values["KERNEL_ENROLL_TOKEN"] = token
        allow = _allow_ips(base)
        if allow:
            values["KERNEL_AGENT_CONF"] = f"allow_ips = {allow}"
    lines = ["#!/usr/bin/env bash", "# Defaults filled in by the Kernel server that served this."]
    for k, v in values.items():
        lines.append(f'if [ -z "${{{k}+x}}" ]; then {k}={shlex.quote(v)}; fi; export {k}')
    body = _package_file("deploy", "install.sh").decode()
    if body.startswith("#!"):
        body = body.split("\n", 1)[1] if "\n" in body else ""
    return "\n".join(lines) + "\n" + body


@bp.get("/agent/install.sh")
@public
def install_sh() -> Response:
    token = request.args.get("token")
    if token is None:
        return _text(install_script(None, None), "install.sh")
    with context.db().session() as s:
        _row, srv = _live_token(s, token)
        key = srv.agent_key
    return _text(install_script(token, key), "install.sh")


@bp.get("/static/agent/install.sh")
@public
def seed_install_sh() -> Response:
    """The seed's way: install with a fresh local key (printed), then add by URL + key."""
    return _text(install_script(None, None), "install.sh")


@bp.get("/agent/uninstall.sh")
@public
def uninstall_sh() -> Response:
    return _text(_package_file("deploy", "uninstall.sh"), "uninstall.sh")


@bp.get("/static/agent/uninstall.sh")
@public
def seed_uninstall_sh() -> Response:
    return _text(_package_file("deploy", "uninstall.sh"), "uninstall.sh")


@bp.get("/agent/kernel-agent.py")
@public
def agent_py() -> Response:
    return _text(agent_file(), "kernel-agent.py")


@bp.get("/static/agent/kernel")
@public
def seed_agent() -> Response:
    return _text(agent_file(), "kernel")


# -- joining -------------------------------------------------------------------------------------
def agent_url_from(addr: str | None, port: int) -> str:
    if not addr:
        raise BadRequest("cannot tell the enrolling host's address")
    ip = ipaddress.ip_address(addr.split("%", 1)[0])
    host = f"[{ip}]" if ip.version == 6 else str(ip)
    return f"http://{host}:{port}"


@bp.post("/agent/enroll")
@public
def enroll() -> Response:
    data = json_body()
    reject_unknown(data, {"token", "port", "hostname", "server"})
    token = get_str(data, "token", required=True, max_len=200) or ""
    port = data.get("port", 8001)
    if isinstance(port, str) and port.isdigit():
        port = int(port)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise BadRequest("'port' must be an integer 1-65535")
    hostname = get_str(data, "hostname", max_len=255)
    claimed = get_name(data, "server", required=False)
    audit.note("server.enroll", target=claimed or "", hostname=hostname)
    with context.db().session() as s:
        row, srv = _live_token(s, token)
        token_id, server_id, name, key = row.id, srv.id, srv.name, srv.agent_key
    audit.note(target=name, hosts=[name])
    if claimed is not None and claimed != name:
        raise Conflict(f"this token is for server {name!r}, not {claimed!r}")
    url = agent_url_from(request.remote_addr, port)
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

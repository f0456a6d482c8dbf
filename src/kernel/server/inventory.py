"""Servers: the inventory (/api/v1/servers) — add, edit, remove, check, init scripts."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from kernel.agent_client import AgentError, fetch_tls_fingerprint, normalize_fingerprint

from . import audit, context, enroll, initflow
from .access import actor, role
from .db import utcnow
from .envcheck import check_agent, check_key, check_url
from .errors import AgentFailed, BadRequest, Conflict, NotFound
from .models import Run, Server
from .params import get_name, get_str, get_tags, json_body, reject_unknown, str_arg
from .security import new_agent_key

bp = Blueprint("inventory", __name__, url_prefix="/api/v1/servers")
FIELDS = {"name", "description", "tags", "agent_url", "agent_key", "tls_fingerprint"}


def get_server(s: Session, server_id: int, *, live: bool = True) -> Server:
    srv = s.get(Server, server_id)
    if srv is None or (live and srv.removed_at is not None):
        raise NotFound(f"no server {server_id}")
    return srv


def name_taken(s: Session, name: str, but: int | None = None) -> bool:
    q = select(Server.id).where(Server.name == name, Server.removed_at.is_(None))
    if but is not None:
        q = q.where(Server.id != but)
    return s.scalars(q).first() is not None


def commit_or_conflict(s: Session, name: str) -> None:
    try:
        s.commit()
    except IntegrityError:
        s.rollback()
        raise Conflict(f"a server named {name!r} exists") from None


def pin_for(url: str, given: object) -> str | None:
    """The TLS certificate fingerprint to pin for an https agent: the one given, else the one
    it presents now (trust on first use, like SSH host keys). None for http."""
    if not url.startswith("https://"):
        if given is not None:
            raise BadRequest("'tls_fingerprint' only applies to https:// agent URLs")
        return None
    if given is not None:
        if not isinstance(given, str):
            raise BadRequest("'tls_fingerprint' must be a string")
        try:
            return normalize_fingerprint(given)
        except ValueError:
            raise BadRequest("'tls_fingerprint' must be a SHA-256 fingerprint (64 hex)") from None
    try:
        return fetch_tls_fingerprint(url, timeout=agent_timeout())
    except AgentError as e:
        raise AgentFailed(f"could not fetch the TLS certificate of {url}: {e}") from None


def agent_timeout() -> float:
    return float(current_app.config["AGENT_CONNECT_TIMEOUT"]) * 2


@bp.get("")
@role("viewer")
def list_servers() -> Response:
    q = select(Server).order_by(Server.name)
    if request.args.get("removed") not in ("1", "true"):
        q = q.where(Server.removed_at.is_(None))
    rows = context.session().scalars(q).all()
    if tag := str_arg("tag"):
        rows = [r for r in rows if tag in (r.tags or [])]
    return jsonify({"servers": [r.to_json() for r in rows]})


@bp.post("")
@role("admin")
def add_server() -> tuple[Response, int]:
    """With agent_url + agent_key: join now (checked first). Without: a pending record and a
    one-time install command."""
    data = json_body()
    reject_unknown(data, FIELDS)
    name = get_name(data) or ""
    description = get_str(data, "description", max_len=4000) or ""
    tags = get_tags(data) or []
    url = get_str(data, "agent_url", max_len=255)
    audit.note("server.create", target=name, hosts=[name], agent_url=url, tags=tags)
    s = context.session()
    if name_taken(s, name):
        raise Conflict(f"a server named {name!r} exists")
    if url is None:
        if "agent_key" in data:
            raise BadRequest("'agent_key' needs 'agent_url' (or leave both out to enroll)")
        srv = Server(
            name=name,
            description=description,
            tags=tags,
            agent_key=new_agent_key(),
            state="pending",
            facts={},
        )
        s.add(srv)
        s.flush()
        token, expires = enroll.issue_token(s, srv)
        commit_or_conflict(s, name)
        return jsonify({"server": srv.to_json(), "enroll": enroll.enroll_info(token, expires)}), 201
    url = check_url(url, current_app.config.get("AGENT_NETWORKS"))
    key = check_key(data.get("agent_key"))
    context.close_session()  # no transaction held while we wait on the agent
    fp = pin_for(url, data.get("tls_fingerprint"))
    facts = check_agent(url, key, fingerprint=fp, timeout=agent_timeout())
    s = context.session()
    if name_taken(s, name):
        raise Conflict(f"a server named {name!r} exists")
    srv = Server(
        name=name,
        description=description,
        tags=tags,
        agent_url=url,
        agent_key=key,
        tls_fingerprint=fp,
        state="online",
        facts=facts,
        last_seen=utcnow(),
    )
    s.add(srv)
    s.flush()
    initflow.start(s, srv, current_app.config, created_by=actor())
    commit_or_conflict(s, name)
    context.server_joined(srv.id)
    return jsonify({"server": srv.to_json()}), 201


@bp.get("/<int:server_id>")
@role("viewer")
def show(server_id: int) -> Response:
    srv = get_server(context.session(), server_id, live=False)
    return jsonify(srv.to_json())


@bp.patch("/<int:server_id>")
@role("admin")
def edit(server_id: int) -> Response:
    data = json_body()
    reject_unknown(data, FIELDS)
    s = context.session()
    srv = get_server(s, server_id)
    changes: dict[str, Any] = {}
    if "name" in data:
        name = get_name(data) or ""
        if name != srv.name and name_taken(s, name, but=srv.id):
            raise Conflict(f"a server named {name!r} exists")
        changes["name"] = name
    if "description" in data:
        changes["description"] = get_str(data, "description", max_len=4000) or ""
    if "tags" in data:
        changes["tags"] = get_tags(data) or []
    url, key = srv.agent_url, srv.agent_key
    if "agent_url" in data:
        url = check_url(
            get_str(data, "agent_url", required=True, max_len=255) or "",
            current_app.config.get("AGENT_NETWORKS"),
        )
    if "agent_key" in data:
        key = check_key(data["agent_key"])
    audit.note(
        "server.edit",
        target=srv.name,
        hosts=[srv.name],
        **{k: v for k, v in changes.items()},
        agent_url=url,
    )
    if (url, key) != (srv.agent_url, srv.agent_key) or "tls_fingerprint" in data:
        if url is None:
            raise BadRequest("'agent_key' needs 'agent_url' on a server that has not joined")
        context.close_session()
        # A new URL is a new certificate to pin; the same URL keeps its pin unless given one.
        given = data.get("tls_fingerprint")
        fp = pin_for(url, given) if (url != srv.agent_url or given) else srv.tls_fingerprint
        facts = check_agent(url, key, fingerprint=fp, timeout=agent_timeout())
        s = context.session()
        srv = get_server(s, server_id)
        changes.update(
            agent_url=url, agent_key=key, tls_fingerprint=fp, facts=facts, last_seen=utcnow()
        )
        if srv.state in ("pending", "offline"):
            changes["state"] = "online"
    for k, v in changes.items():
        setattr(srv, k, v)
    commit_or_conflict(s, srv.name)
    return jsonify(srv.to_json())


@bp.delete("/<int:server_id>")
@role("admin")
def remove(server_id: int) -> Response:
    """Stops future jobs on the server (queued runs are cancelled); history stays."""
    s = context.session()
    srv = get_server(s, server_id)
    audit.note("server.remove", target=srv.name, hosts=[srv.name])
    now = utcnow()
    srv.removed_at, srv.state = now, "offline"
    enroll.revoke_tokens(s, srv)
    for run in s.scalars(select(Run).where(Run.server_id == srv.id, Run.state == "queued")):
        run.state, run.finished_at, run.error = "cancelled", now, "server removed"
    s.commit()
    return jsonify(srv.to_json())


@bp.post("/<int:server_id>/enroll-token")
@role("admin")
def new_enroll_token(server_id: int) -> tuple[Response, int]:
    """A fresh one-time install command (earlier tokens of this server stop working)."""
    s = context.session()
    srv = get_server(s, server_id)
    audit.note("server.enroll_token", target=srv.name, hosts=[srv.name])
    token, expires = enroll.issue_token(s, srv)
    s.commit()
    return jsonify({"server": srv.to_json(), "enroll": enroll.enroll_info(token, expires)}), 201


@bp.post("/<int:server_id>/check")
@role("operator")
def recheck(server_id: int) -> Response:
    """Run the environment check again and store its facts."""
    s = context.session()
    srv = get_server(s, server_id)
    if not srv.agent_url:
        raise Conflict(f"server {srv.name} has not joined yet")
    url, key, fp = srv.agent_url, srv.agent_key, srv.tls_fingerprint
    audit.note("server.check", target=srv.name, hosts=[srv.name])
    context.close_session()
    facts = check_agent(url, key, fingerprint=fp, timeout=agent_timeout())
    s = context.session()
    srv = get_server(s, server_id)
    srv.facts, srv.last_seen, srv.last_error = facts, utcnow(), None
    if srv.state == "offline":
        srv.state = "online"
    s.commit()
    return jsonify(srv.to_json())


@bp.get("/<int:server_id>/init")
@role("viewer")
def init_status(server_id: int) -> Response:
    s = context.session()
    srv = get_server(s, server_id, live=False)
    return jsonify({"server": srv.name, "scripts": initflow.status(s, srv, current_app.config)})


@bp.post("/<int:server_id>/init")
@role("operator")
def run_init(server_id: int) -> tuple[Response, int]:
    """``{}``: continue from the first script not yet ok (retry); ``{"script": name}``: run
    that one script now (e.g. one added after the server joined)."""
    data = json_body() if request.data else {}
    reject_unknown(data, {"script"})
    only = get_str(data, "script", max_len=255)
    s = context.session()
    srv = get_server(s, server_id)
    if not srv.agent_url:
        raise Conflict(f"server {srv.name} has not joined yet")
    audit.note("server.init", target=srv.name, hosts=[srv.name], script=only or "(pending)")
    job = initflow.start(s, srv, current_app.config, created_by=actor(), only=only)
    if job is None:
        raise Conflict(f"every init script has already run successfully on {srv.name}")
    s.commit()
    context.runner().wake()
    return jsonify({"job_id": job.id, "script": job.meta.get("script")}), 202

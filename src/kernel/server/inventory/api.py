"""The routes of the inventory: servers (/api/v1/servers — add, edit, remove, check, init
scripts) and joining over HTTP (ARCHITECTURE.md §3: the served install and uninstall scripts
and agent file, the seed's /static/agent/* paths too, and ``POST /agent/enroll``)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from kernel.exceptions import Conflict, InvalidInput, NotFound
from kernel.server.auth.credentials import new_agent_key
from kernel.server.core.db import utcnow
from kernel.server.core.settings import public_url
from kernel.server.inventory import enrollment, initflow
from kernel.server.inventory.envcheck import check_agent, check_key, check_url
from kernel.server.inventory.schemas import (
    Enroll,
    Enrolled,
    InitRun,
    InitStarted,
    InitStatusAnswer,
    ServerAnswer,
    ServerCreate,
    ServerCreated,
    ServerEdit,
    ServerList,
    ServerListAnswer,
)
from kernel.server.inventory.servers import (
    commit_or_conflict,
    get_server,
    name_taken,
    page,
    pin_for,
)
from kernel.server.models.jobs import Job, Run
from kernel.server.models.servers import EnrollToken, Server
from kernel.server.web import audit, context
from kernel.server.web.access import actor, public, role
from kernel.server.web.endpoint import endpoint

bp = Blueprint("inventory", __name__, url_prefix="/api/v1/servers")


def _new_enroll_token(s: Session, srv: Server) -> dict[str, Any]:
    """A fresh one-time token for ``srv`` and the install line that carries it."""
    ttl = float(current_app.config["ENROLL_TOKEN_TTL"])
    token, expires = enrollment.issue_token(s, srv, ttl)
    base = public_url(current_app.config, request.host_url)
    return enrollment.enroll_info(base, token, expires, context.install_pin(base))


def agent_timeout() -> float:
    return float(current_app.config["AGENT_CONNECT_TIMEOUT"]) * 2


@bp.get("")
@role("viewer")
@endpoint("servers", query=ServerList, answers={200: ServerListAnswer})
def list_servers(query: ServerList) -> Response:
    """In name order, a page at a time (``?limit=``, up to 1000; ``?after=`` the ``next`` of
    the page before); ``?tag=``, ``?state=``, ``?q=`` (in the name) filter."""
    rows, total, cursor = page(context.session(), query)
    return jsonify({"servers": [r.to_json() for r in rows], "total": total, "next": cursor})


@bp.post("")
@role("admin")
@endpoint("add a server: by agent URL + key, or pending with an install command",
          body=ServerCreate, answers={201: ServerCreated})  # fmt: skip
def add_server(body: ServerCreate) -> tuple[Response, int]:
    """With agent_url + agent_key: join now (checked first). Without: a pending record and a
    one-time install command."""
    srv, enroll = create_server(body)
    if enroll is not None:
        return jsonify({"server": srv.to_json(), "enroll": enroll}), 201
    return jsonify({"server": srv.to_json()}), 201


def create_server(body: ServerCreate) -> tuple[Server, dict[str, Any] | None]:
    """Add a server (also the console's "add server"): joined now when given an agent URL and
    key (checked first), else pending with its one-time install command (the second value)."""
    name, description, tags, url = (
        body.name,
        body.description,
        sorted(set(body.tags)),
        body.agent_url,
    )
    audit.note("server.create", target=name, hosts=[name], agent_url=url, tags=tags)
    s = context.session()
    if name_taken(s, name):
        raise Conflict(f"a server named {name!r} exists")
    if url is None:
        if body.agent_key is not None:
            raise InvalidInput("'agent_key' needs 'agent_url' (or leave both out to enroll)")
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
        enroll = _new_enroll_token(s, srv)
        commit_or_conflict(s, name)
        return srv, enroll
    url = check_url(url, current_app.config.get("AGENT_NETWORKS"))
    key = check_key(body.agent_key)
    context.close_session()  # no transaction held while we wait on the agent
    fp = pin_for(url, body.tls_fingerprint, agent_timeout())
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
    return srv, None


@bp.get("/<int:server_id>")
@role("viewer")
@endpoint("one server (removed ones too)", answers={200: ServerAnswer})
def show(server_id: int) -> Response:
    srv = get_server(context.session(), server_id, live=False)
    return jsonify(srv.to_json())


@bp.patch("/<int:server_id>")
@role("admin")
@endpoint("edit name, URL, key, description, tags", body=ServerEdit, answers={200: ServerAnswer})
def edit(server_id: int, body: ServerEdit) -> Response:
    return jsonify(edit_server(server_id, body).to_json())


def edit_server(server_id: int, body: ServerEdit) -> Server:
    """Change the fields given (also the console's edit form); a new URL or key is checked
    against the agent before anything is stored."""
    given = body.model_fields_set
    s = context.session()
    srv = get_server(s, server_id)
    changes: dict[str, Any] = {}
    if body.name is not None:
        if name_taken(s, body.name, but=srv.id):
            raise Conflict(f"a server named {body.name!r} exists")
        changes["name"] = body.name
    if "description" in given:
        changes["description"] = body.description or ""
    if "tags" in given:
        changes["tags"] = sorted(set(body.tags or []))
    url, key = srv.agent_url, srv.agent_key
    if "agent_url" in given:
        if body.agent_url is None:
            raise InvalidInput("'agent_url' must be a string")
        url = check_url(body.agent_url, current_app.config.get("AGENT_NETWORKS"))
    if "agent_key" in given:
        key = check_key(body.agent_key)
    audit.note(
        "server.edit",
        target=srv.name,
        hosts=[srv.name],
        **{k: v for k, v in changes.items()},
        agent_url=url,
    )
    if (url, key) != (srv.agent_url, srv.agent_key) or "tls_fingerprint" in given:
        if url is None:
            raise InvalidInput("'agent_key' needs 'agent_url' on a server that has not joined")
        context.close_session()
        # A new URL is a new certificate to pin; the same URL keeps its pin unless given one.
        pin = body.tls_fingerprint
        fp = srv.tls_fingerprint
        if url != srv.agent_url or pin:
            fp = pin_for(url, pin, agent_timeout())
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
    return srv


@bp.delete("/<int:server_id>")
@role("admin")
@endpoint("remove (stops future jobs, keeps history)", answers={200: ServerAnswer})
def remove(server_id: int) -> Response:
    """Stops future jobs on the server (queued runs are cancelled); history stays."""
    return jsonify(remove_server(server_id).to_json())


def remove_server(server_id: int) -> Server:
    """Remove a server (also the console's): queued runs on it are cancelled; history stays."""
    s = context.session()
    srv = get_server(s, server_id)
    audit.note("server.remove", target=srv.name, hosts=[srv.name])
    now = utcnow()
    srv.removed_at, srv.state = now, "offline"
    enrollment.revoke_tokens(s, srv)
    for run in s.scalars(select(Run).where(Run.server_id == srv.id, Run.state == "queued")):
        run.state, run.finished_at, run.error = "cancelled", now, "server removed"
    s.commit()
    return srv


@bp.post("/<int:server_id>/enroll-token")
@role("admin")
@endpoint("a fresh one-time install command", answers={201: ServerCreated})
def new_enroll_token(server_id: int) -> tuple[Response, int]:
    """A fresh one-time install command (earlier tokens of this server stop working)."""
    srv, enroll = renew_enroll_token(server_id)
    return jsonify({"server": srv.to_json(), "enroll": enroll}), 201


def renew_enroll_token(server_id: int) -> tuple[Server, dict[str, Any]]:
    s = context.session()
    srv = get_server(s, server_id)
    audit.note("server.enroll_token", target=srv.name, hosts=[srv.name])
    enroll = _new_enroll_token(s, srv)
    s.commit()
    return srv, enroll


@bp.post("/<int:server_id>/check")
@role("operator")
@endpoint("run the environment check again", answers={200: ServerAnswer})
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
@endpoint("init scripts and their records on this server", answers={200: InitStatusAnswer})
def init_status(server_id: int) -> Response:
    s = context.session()
    srv = get_server(s, server_id, live=False)
    return jsonify({"server": srv.name, "scripts": initflow.status(s, srv, current_app.config)})


@bp.post("/<int:server_id>/init")
@role("operator")
@endpoint("continue pending init scripts, or run one by name", body=InitRun,
          body_required=False, answers={202: InitStarted})  # fmt: skip
def run_init(server_id: int, body: InitRun) -> tuple[Response, int]:
    """``{}``: continue from the first script not yet ok (retry); ``{"script": name}``: run
    that one script now (e.g. one added after the server joined)."""
    job = start_init(server_id, body)
    return jsonify({"job_id": job.id, "script": job.meta.get("script")}), 202


def start_init(server_id: int, body: InitRun) -> Job:
    """Queue the pending init scripts or the one named (also the console's "run")."""
    only = body.script
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
    return job


# ------------------------------------------------------------------------------------------
enroll_bp = Blueprint("enroll", __name__)


def _base() -> str:
    return public_url(current_app.config, request.host_url)


def _text(body: bytes | str, name: str) -> Response:
    resp = Response(body, mimetype="text/plain")
    resp.headers["Content-Disposition"] = f"inline; filename={name}"
    resp.headers["Cache-Control"] = "no-store"
    return resp


@enroll_bp.get("/agent/install.sh")
@public
def install_sh() -> Response:
    token = request.args.get("token")
    if token is None:
        return seed_install_sh()
    with context.db().session() as s:
        _row, srv = enrollment.live_token(s, token)
        key = srv.agent_key
    base = _base()
    allow = enrollment.allow_ips_for(base, current_app.config.get("AGENT_ALLOW_IPS"))
    pin = context.install_pin(base)
    return _text(enrollment.install_script(base, token, key, allow, pin), "install.sh")


@enroll_bp.get("/static/agent/install.sh")
@public
def seed_install_sh() -> Response:
    """The seed's way: install with a fresh local key (printed), then add by URL + key."""
    base = _base()
    return _text(enrollment.install_script(base, pin=context.install_pin(base)), "install.sh")


@enroll_bp.get("/agent/uninstall.sh")
@public
def uninstall_sh() -> Response:
    return _text(enrollment.package_file("deploy", "uninstall.sh"), "uninstall.sh")


@enroll_bp.get("/static/agent/uninstall.sh")
@public
def seed_uninstall_sh() -> Response:
    return _text(enrollment.package_file("deploy", "uninstall.sh"), "uninstall.sh")


@enroll_bp.get("/agent/kernel-agent.py")
@public
def agent_py() -> Response:
    return _text(enrollment.agent_file(), "kernel-agent.py")


@enroll_bp.get("/static/agent/kernel")
@public
def seed_agent() -> Response:
    return _text(enrollment.agent_file(), "kernel")


@enroll_bp.post("/agent/enroll")
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


blueprints = (bp, enroll_bp)

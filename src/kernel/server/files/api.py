"""The routes of files (/api/v1/files): upload (the raw body, streamed to disk), list, show,
delete, push to servers (a job), fetch from one server (the bytes); and the signed,
expiring download URLs the hosts of a push fetch the file from (plain-text errors for curl
and wget, as service artifacts have)."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any
from urllib.parse import quote

from flask import Blueprint, Response, current_app, jsonify, request, send_file
from sqlalchemy import select

from kernel.exceptions import InvalidInput, NotFound, TooLarge
from kernel.server.core.db import utcnow
from kernel.server.core.settings import public_url
from kernel.server.core.text import iso
from kernel.server.files import fetch as fetching
from kernel.server.files import push as pushing
from kernel.server.files import storage
from kernel.server.files.schemas import (
    FetchQuery,
    Push,
    UploadAnswer,
    UploadListAnswer,
    UploadQuery,
)
from kernel.server.jobs.schemas import JobAnswer
from kernel.server.jobs.service import create_job, live_servers, resolve_targets
from kernel.server.jobs.shapes import job_json
from kernel.server.models.files import Upload
from kernel.server.web import audit, context
from kernel.server.web.access import actor, public, role
from kernel.server.web.endpoint import endpoint

bp = Blueprint("files", __name__, url_prefix=storage.UPLOAD_PATH)


def upload_json(up: Upload) -> dict[str, Any]:
    return {
        "id": up.id,
        "name": up.name,
        "size": up.size,
        "sha256": up.sha256,
        "created_by": up.created_by,
        "created_at": iso(up.created_at),
        "expires_at": iso(up.expires_at),
    }


def _get(upload_id: str) -> Upload:
    up = context.session().get(Upload, upload_id[:64]) if storage.is_upload_id(upload_id) else None
    if up is None or up.expires_at <= utcnow():
        raise NotFound(f"no uploaded file {upload_id[:64]!r} (uploads are kept FILES_KEEP)")
    return up


@bp.get("")
@role("viewer")
@endpoint("uploaded files waiting for pushes, and the size caps", answers={200: UploadListAnswer})
def list_files() -> Response:
    s = context.session()
    ups = s.scalars(
        select(Upload).where(Upload.expires_at > utcnow()).order_by(Upload.created_at.desc())
    )
    config = current_app.config
    return jsonify(
        {
            "files": [upload_json(u) for u in ups],
            "max_upload": config["FILES_MAX_UPLOAD"],
            "max_fetch": config["FILES_MAX_FETCH"],
        }
    )


@bp.post("")
@role("operator")
@endpoint("upload a file (the raw body, up to FILES_MAX_UPLOAD) for pushes", query=UploadQuery,
          consumes="application/octet-stream", answers={201: UploadAnswer})  # fmt: skip
def upload(query: UploadQuery) -> tuple[Response, int]:
    """The body is the file's bytes (any Content-Type), read in chunks straight to disk."""
    config = current_app.config
    cap = int(config["FILES_MAX_UPLOAD"])
    data_dir = config["DATA_DIR"]
    audit.note("file.upload", target=f"file {query.name or '-'}", name=query.name)
    length = request.content_length
    if length is not None and length > cap:
        raise storage.too_large(length, cap)
    request.max_content_length = cap + 1  # ours is the clearer message: we stop at cap + 1
    s = context.session()
    storage.prune(s, data_dir, utcnow())
    s.commit()
    context.close_session()  # no transaction (nor SQLite's lock) while the bytes come in
    try:
        got = storage.receive(request.stream, data_dir, cap=cap, length=length)
    except TooLarge:
        raise
    except Exception as e:  # werkzeug's own limit or a client that went away
        if getattr(e, "code", None) == 413:
            raise storage.too_large(None, cap) from None
        if getattr(e, "code", None) == 400:
            raise InvalidInput("the upload ended before its last byte") from None
        raise
    now = utcnow()
    up = Upload(
        id=got.id,
        name=query.name,
        size=got.size,
        sha256=got.sha256,
        created_by=actor(),
        created_at=now,
        expires_at=now + dt.timedelta(seconds=float(config["FILES_KEEP"])),
    )
    s = context.session()
    s.add(up)
    try:
        s.commit()
    except Exception:
        storage.discard(data_dir, got.id)
        raise
    audit.note(target=f"file {got.id}", size=got.size, sha256=got.sha256)
    return jsonify(upload_json(up)), 201


@bp.get("/fetch")
@role("operator")
@endpoint("a file's bytes from one server (up to FILES_MAX_FETCH)", query=FetchQuery,
          produces="application/octet-stream")  # fmt: skip
def fetch(query: FetchQuery) -> Response:
    """Operators only: a file may hold secrets (it is read as root)."""
    s = context.session()
    server = next((srv for srv in live_servers(s) if srv.name == query.server), None)
    if server is None:
        raise NotFound(f"no server named {query.server!r}")
    context.close_session()  # the agent may take a while
    audit.note("file.fetch", target=f"server {server.name}", hosts=[server.name], path=query.path)
    config = current_app.config
    got = fetching.fetch(
        server,
        query.path,
        cap=int(config["FILES_MAX_FETCH"]),
        connect_timeout=float(config["AGENT_CONNECT_TIMEOUT"]),
    )
    audit.note(size=len(got.data), sha256=got.sha256)
    audit.write_with(context.session())  # a GET: the request hook would not record it
    context.session().commit()
    name = query.path.rsplit("/", 1)[-1]
    resp = Response(got.data, mimetype="application/octet-stream")
    resp.headers["Content-Disposition"] = f"attachment; filename*=UTF-8''{quote(name)}"
    resp.headers["X-Kernel-SHA256"] = got.sha256
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Cache-Control"] = "private, no-store"
    return resp


@bp.get("/<upload_id>")
@role("viewer")
@endpoint("one uploaded file", answers={200: UploadAnswer})
def get_file(upload_id: str) -> Response:
    return jsonify(upload_json(_get(upload_id)))


@bp.delete("/<upload_id>")
@role("operator")
@endpoint("delete an uploaded file (pushes still running fail their download)",
          answers={200: UploadAnswer})  # fmt: skip
def delete_file(upload_id: str) -> Response:
    s = context.session()
    up = _get(upload_id)
    shown = upload_json(up)
    audit.note("file.delete", target=f"file {up.id}", name=up.name)
    s.delete(up)
    s.commit()
    storage.discard(current_app.config["DATA_DIR"], up.id)
    return jsonify(shown)


@bp.post("/<upload_id>/push")
@role("operator")
@endpoint("write an uploaded file on servers (a job; atomic, checked by SHA-256 there)",
          body=Push, answers={201: JobAnswer})  # fmt: skip
def push(upload_id: str, body: Push) -> tuple[Response, int]:
    s = context.session()
    up = _get(upload_id)
    config = current_app.config
    spec = body.targets.spec()
    audit.note("file.push", target=f"file {up.id}", path=body.path, mode=body.mode,
               owner=body.owner, sha256=up.sha256)  # fmt: skip
    servers, skipped = resolve_targets(s, spec)
    audit.note(hosts=[srv.name for srv in servers])
    url = pushing.download_url(config, up.id, kernel_url=public_url(config, request.url_root))
    command = pushing.command(
        up, path=body.path, mode=body.mode, owner=body.owner, timeout=body.timeout, url=url
    )
    up.expires_at = pushing.keep_until(up, config, utcnow(), body.timeout)
    with context.runner().admission(len(servers)) as admission:
        job = create_job(
            s,
            command,
            servers,
            created_by=actor(),
            kind=pushing.KIND,
            targets=spec,
            meta={
                "file_id": up.id,
                "name": up.name,
                "path": body.path,
                "mode": body.mode,
                "owner": body.owner,
                "size": up.size,
                "sha256": up.sha256,
            },
            owner=admission.owner,
        )
        audit.note(job=job.id)
        s.commit()
    admission.launch(job, servers)
    return jsonify({**job_json(job, job.runs), "skipped": skipped}), 201


# ------------------------------------------------------------------------------------------
downloads_bp = Blueprint("file_downloads", __name__)


def _text(status: int, msg: str) -> Response:
    return Response(f"{status} {msg}\n", status=status, mimetype="text/plain")


@downloads_bp.route(f"{pushing.URL_PREFIX}/<upload_id>/<expires>/<signature>", methods=["GET"])
@public
def download(upload_id: str, expires: str, signature: str) -> Response:
    """The file of a push, for its hosts: signed, expiring (files/push.py)."""
    config = current_app.config
    why = pushing.check_download(config, upload_id, expires, signature, now=time.time())
    if why is not None:
        return _text(403, f"forbidden: {why}")
    path = storage.path_of(config["DATA_DIR"], upload_id)
    if path is None:
        return _text(404, "not found (the upload was deleted or has expired)")
    resp = send_file(path, mimetype="application/octet-stream", conditional=True, max_age=0)
    resp.headers["Cache-Control"] = "private, no-store"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp


blueprints = (bp, downloads_bp)

"""Files: the uploads kept with the size caps, an upload (static/js/files.js sends the file to
the API's own streamed upload, POST /api/v1/files), a push of an upload to servers (a job:
its page shows each host's result), and a file fetched from one server, shown as text when
it is text and small, else offered as a download. Pushes and fetches go through the files
API's own functions (files/api.py)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from flask import current_app, request
from flask.typing import ResponseReturnValue
from sqlalchemy import select

from kernel.exceptions import InvalidInput, KernelError
from kernel.server.core.db import utcnow
from kernel.server.core.inputs import parse
from kernel.server.files.api import delete_upload, fetch_file, push_upload, upload_json
from kernel.server.files.schemas import FetchQuery, Push
from kernel.server.jobs.service import live_servers
from kernel.server.models.files import Upload
from kernel.server.ui.web import bp, form_list, form_model, form_text, redirect_to, render
from kernel.server.web import context
from kernel.server.web.access import role
from kernel.server.web.errors import status_of

SHOWN_MAX = 256 * 1024  # a fetched text file up to this size is shown in the page


def _page(status: int = 200, **extra: Any) -> tuple[str, int]:
    s = context.session()
    ups = s.scalars(
        select(Upload).where(Upload.expires_at > utcnow()).order_by(Upload.created_at.desc())
    )
    config = current_app.config
    values: dict[str, Any] = {
        "uploads": [upload_json(u) for u in ups],
        "max_upload": int(config["FILES_MAX_UPLOAD"]),
        "max_fetch": int(config["FILES_MAX_FETCH"]),
        "servers": [srv.name for srv in live_servers(s) if srv.agent_url],
        "uploaded": request.args.get("uploaded", "")[:64],
        "fetch": None,
        "fetch_error": None,
        "asked": {"server": "", "path": ""},
    }
    values.update(extra)
    return render("files.html", active="files", **values), status


@bp.get("/files")
@role("viewer")
def files_page() -> tuple[str, int]:
    return _page()


@bp.get("/files/fetch")
@role("operator")
def fetch_page() -> tuple[str, int]:
    """A file of one server in the page (text), or a link to download it; the error (not
    found, over the cap, no answer) in the page, with its status."""
    asked = {
        "server": request.args.get("server", "")[:200],
        "path": request.args.get("path", "")[:5000],
    }
    try:
        query = parse(FetchQuery, asked)
        got = fetch_file(query.server, query.path)
    except KernelError as e:
        status, _slug = status_of(e)
        return _page(status, asked=asked, fetch_error={"status": status, "message": e.message})
    text = None
    if len(got.data) <= SHOWN_MAX and b"\0" not in got.data:
        try:
            text = got.data.decode("utf-8")
        except UnicodeDecodeError:
            text = None
    shown = {
        "server": query.server,
        "path": query.path,
        "size": len(got.data),
        "sha256": got.sha256,
        "text": text,
        "download": "/api/v1/files/fetch?" + urlencode(asked),
    }
    return _page(asked=asked, fetch=shown)


@bp.post("/files/push")
@role("operator")
def push_file() -> ResponseReturnValue:
    upload_id = form_text("upload", 64)
    if not upload_id:
        raise InvalidInput("choose an uploaded file to push")
    kind = form_text("target_kind", 10)
    targets: dict[str, Any]
    if kind == "all":
        targets = {"all": True}
    elif kind == "tags":
        targets = {"tags": form_list("tags")}
    else:
        targets = {"servers": form_list("servers")}
    if not any(targets.values()):
        raise InvalidInput("choose the servers to push to")
    fields: dict[str, Any] = {
        "targets": targets,
        "path": form_text("path", 5000).strip(),
        "mode": form_text("mode", 10).strip() or "0644",
    }
    owner = form_text("owner", 100).strip()
    if owner:
        fields["owner"] = owner
    job, _skipped = push_upload(upload_id, form_model(Push, fields))
    return redirect_to(f"/jobs/{job.id}")


@bp.post("/files/<upload_id>/delete")
@role("operator")
def remove_upload(upload_id: str) -> ResponseReturnValue:
    delete_upload(upload_id)
    return redirect_to("/files")

"""Serving service artifacts (and, with PUBLIC_ARTIFACTS, the seed's public paths): plain
text errors, for wget and curl in scripts. The rules are in artifacts.py."""

from __future__ import annotations

import time
from pathlib import Path

from flask import Blueprint, Response, current_app, send_file

from kernel.names import is_valid_name
from kernel.server.services.artifacts import URL_PREFIX, mimetype_of, resolve, signing_key, verify
from kernel.server.web.access import public

bp = Blueprint("artifacts", __name__)


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


@bp.route(f"{URL_PREFIX}/<name>/<expires>/<signature>/<path:relpath>", methods=["GET"])
@public
def signed_file(name: str, expires: str, signature: str, relpath: str) -> Response:
    why = verify(signing_key(current_app.config), name, expires, signature, now=time.time())
    if why is not None:
        return _text(403, f"forbidden: {why}")
    resp = _serve(_data_dir() / "service" / name, relpath)
    resp.headers["Cache-Control"] = "private, no-store"
    return resp


@bp.route("/static/service/<name>/<path:relpath>", methods=["GET"])
@public
def public_service_file(name: str, relpath: str) -> Response:
    if not current_app.config["PUBLIC_ARTIFACTS"] or not is_valid_name(name):
        return _text(404, "not found")
    return _serve(_data_dir() / "service" / name, relpath)


@bp.route("/static/init/<path:relpath>", methods=["GET"])
@public
def public_init_file(relpath: str) -> Response:
    if not current_app.config["PUBLIC_ARTIFACTS"]:
        return _text(404, "not found")
    return _serve(_data_dir() / "init", relpath)

"""Service artifacts, served only through signed expiring URLs.

A deploy script gets `KERNEL_SERVICE_URL`, a URL prefix such as

    https://kernel.example/service-files/sums/1764000000/3f9a…

and downloads `"$KERNEL_SERVICE_URL/sums.tgz"`. The prefix names the service and an expiry
time, signed with HMAC-SHA256; any file of that one service folder can be fetched under it
until it expires. The seed's public `/static/service/<name>/<file>` and `/static/init/<file>`
paths exist only when the setting KERNEL_PUBLIC_ARTIFACTS is true.

Answers: 403 for a bad or expired signature (decided before the disk is looked at, so it
says nothing about which files exist); 404 for anything not served under a valid prefix —
missing file, folder, odd name, `..`, hidden file, symlink out of the folder.
"""

from __future__ import annotations

import hashlib
import hmac
import mimetypes
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

from flask import Blueprint, Response, current_app, send_file

from kernel.exceptions import ServerError
from kernel.server.shell import is_valid_name

bp = Blueprint("artifacts", __name__)

URL_PREFIX = "/service-files"
DEFAULT_TTL = 3600  # seconds a KERNEL_SERVICE_URL stays valid; a deploy must start by then
MAX_PATH_LEN = 1024
_SCOPE = "service-files"


class ArtifactConfigError(ServerError):
    """The server lacks what it needs to sign artifact URLs (a key, KERNEL_URL)."""


# --- pure signing ------------------------------------------------------------------------


def _message(name: str, expires: int) -> bytes:
    return f"{_SCOPE}\n{name}\n{expires}".encode()


def sign(key: bytes, name: str, expires: int) -> str:
    """Hex HMAC-SHA256 of (scope, service name, expiry) under `key`."""
    return hmac.new(key, _message(name, expires), hashlib.sha256).hexdigest()


def verify(key: bytes, name: str, expires: str, signature: str, *, now: float) -> str | None:
    """None if the prefix is valid at `now`, else why not ("bad signature" / "expired")."""
    if not expires.isascii() or not expires.isdigit() or len(expires) > 12:
        return "bad signature"
    if not is_valid_name(name):
        return "bad signature"
    expected = sign(key, name, int(expires))
    if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
        return "bad signature"
    if int(expires) < now:
        return "expired"
    return None


def service_url(kernel_url: str, key: bytes, name: str, *, ttl: float, now: float) -> str:
    """The signed prefix for one service (no trailing slash; scripts append `/<file>`)."""
    if not is_valid_name(name):
        raise ValueError(f"service name {name!r} is not allowed")
    expires = int(now + ttl)
    base = kernel_url.rstrip("/")
    return f"{base}{URL_PREFIX}/{name}/{expires}/{sign(key, name, expires)}"


def setting(config: Mapping[str, object], name: str, default: object = None) -> object:
    """`KERNEL_<name>` or `<name>` from the app config.

    The app loads `KERNEL_*` environment variables without their prefix
    (`from_prefixed_env`), while a mapping given directly may use the full name: both work.
    """
    value = config.get(f"KERNEL_{name}")
    return value if value is not None else config.get(name, default)


def signing_key(config: Mapping[str, object]) -> bytes:
    """KERNEL_ARTIFACT_KEY if set, else a key derived from SECRET_KEY (never SECRET_KEY itself,
    so a signature made here is useless as a session signature and vice versa)."""
    own = setting(config, "ARTIFACT_KEY")
    if own:
        return own if isinstance(own, bytes) else str(own).encode()
    secret = config.get("SECRET_KEY")
    if not secret:
        raise ArtifactConfigError("SECRET_KEY (or KERNEL_ARTIFACT_KEY) must be set")
    raw = secret if isinstance(secret, bytes) else str(secret).encode()
    return hmac.new(raw, b"kernel artifact urls", hashlib.sha256).digest()


def service_url_for(config: Mapping[str, object], name: str, *, now: float | None = None) -> str:
    """`KERNEL_SERVICE_URL` for a job, from the app config (KERNEL_URL, key, TTL)."""
    kernel_url = setting(config, "URL")
    if not kernel_url or not isinstance(kernel_url, str):
        raise ArtifactConfigError("KERNEL_URL must be set to make artifact URLs")
    ttl = setting(config, "ARTIFACT_TTL", DEFAULT_TTL)
    if not isinstance(ttl, int | float) or isinstance(ttl, bool) or ttl <= 0:
        raise ArtifactConfigError(f"KERNEL_ARTIFACT_TTL must be a positive number, not {ttl!r}")
    return service_url(
        kernel_url,
        signing_key(config),
        name,
        ttl=float(ttl),
        now=time.time() if now is None else now,
    )


# --- safe file resolution ----------------------------------------------------------------


def resolve(root: Path, relpath: str) -> Path | None:
    """The real path of `relpath` under `root` if it may be served, else None.

    Every part must be an allowed name (no `..`, `.`, empty or hidden parts, no odd
    characters), and the file, with symlinks resolved, must be a regular file inside root.
    """
    if len(relpath) > MAX_PATH_LEN:
        return None
    parts = relpath.split("/")
    if not all(is_valid_name(p) for p in parts):
        return None
    base = os.path.realpath(root)
    if not os.path.isdir(base):
        return None
    target = os.path.realpath(os.path.join(base, *parts))
    if not target.startswith(base + os.sep):
        return None
    if not os.path.isfile(target):
        return None
    return Path(target)


def _mimetype(name: str) -> str:
    mime, encoding = mimetypes.guess_type(name)
    # A .tgz must arrive as the bytes on disk: a Content-Encoding header would make some
    # clients (wget2, browsers) unpack it on the way.
    if mime is None or encoding is not None:
        return "application/octet-stream"
    if name.endswith(".sh"):
        return "text/plain"
    return mime


# --- the blueprint -----------------------------------------------------------------------

V = TypeVar("V", bound=Callable[..., Response])


def _public(view: V) -> V:
    """The server's access mark for views without login (as `access.public` sets it; this
    module stays free of the app's imports). The signature, not a session, guards them."""
    view._kernel_access = "public"  # type: ignore[attr-defined]
    return view


def _text(status: int, msg: str) -> Response:
    # Plain text: the clients are wget/curl in scripts, and this reads well in their stderr.
    return Response(f"{status} {msg}\n", status=status, mimetype="text/plain")


def _data_dir() -> Path:
    data_dir = setting(current_app.config, "DATA_DIR")
    if not data_dir:
        raise ArtifactConfigError("KERNEL_DATA_DIR must be set to serve artifacts")
    return Path(str(data_dir))


def _serve(root: Path, relpath: str) -> Response:
    path = resolve(root, relpath)
    if path is None:
        return _text(404, "not found")
    resp = send_file(path, mimetype=_mimetype(path.name), conditional=True, max_age=0)
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp


@bp.route(f"{URL_PREFIX}/<name>/<expires>/<signature>/<path:relpath>", methods=["GET"])
@_public
def signed_file(name: str, expires: str, signature: str, relpath: str) -> Response:
    why = verify(signing_key(current_app.config), name, expires, signature, now=time.time())
    if why is not None:
        return _text(403, f"forbidden: {why}")
    resp = _serve(_data_dir() / "service" / name, relpath)
    resp.headers["Cache-Control"] = "private, no-store"
    return resp


def public_enabled(config: Mapping[str, object]) -> bool:
    value = setting(config, "PUBLIC_ARTIFACTS", False)
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


@bp.route("/static/service/<name>/<path:relpath>", methods=["GET"])
@_public
def public_service_file(name: str, relpath: str) -> Response:
    if not public_enabled(current_app.config) or not is_valid_name(name):
        return _text(404, "not found")
    return _serve(_data_dir() / "service" / name, relpath)


@bp.route("/static/init/<path:relpath>", methods=["GET"])
@_public
def public_init_file(relpath: str) -> Response:
    if not public_enabled(current_app.config):
        return _text(404, "not found")
    return _serve(_data_dir() / "init", relpath)

"""Service artifacts, served only through signed expiring URLs.

A deploy script gets `KERNEL_SERVICE_URL`, a URL prefix such as

    https://kernel.example/service-files/sums/1764000000/3f9a…

and downloads `"$KERNEL_SERVICE_URL/sums.tgz"`. The prefix names the service and an expiry
time, signed with HMAC-SHA256; any file of that one service folder can be fetched under it
until it expires. The seed's public `/static/service/<name>/<file>` and `/static/init/<file>`
paths exist only when the setting PUBLIC_ARTIFACTS is true (services/api.py serves both).

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
from collections.abc import Mapping
from pathlib import Path

from kernel.exceptions import ConfigError
from kernel.names import is_valid_name

URL_PREFIX = "/service-files"
DEFAULT_TTL = 3600  # seconds a KERNEL_SERVICE_URL stays valid; a deploy must start by then
MAX_PATH_LEN = 1024
_SCOPE = "service-files"


class ArtifactConfigError(ConfigError):
    """The server lacks what it needs to sign artifact URLs (a key, KERNEL_URL)."""


# --- pure signing ------------------------------------------------------------------------


def _message(name: str, expires: int, scope: str) -> bytes:
    return f"{scope}\n{name}\n{expires}".encode()


def sign(key: bytes, name: str, expires: int, *, scope: str = _SCOPE) -> str:
    """Hex HMAC-SHA256 of (scope, name, expiry) under `key`. The scope keeps what is signed
    for one use (a service's files, an uploaded file: files/push.py) useless for another."""
    return hmac.new(key, _message(name, expires, scope), hashlib.sha256).hexdigest()


def verify(
    key: bytes, name: str, expires: str, signature: str, *, now: float, scope: str = _SCOPE
) -> str | None:
    """None if the prefix is valid at `now`, else why not ("bad signature" / "expired")."""
    if not expires.isascii() or not expires.isdigit() or len(expires) > 12:
        return "bad signature"
    if not is_valid_name(name):
        return "bad signature"
    expected = sign(key, name, int(expires), scope=scope)
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


def signing_key(config: Mapping[str, object]) -> bytes:
    """KERNEL_ARTIFACT_KEY if set, else a key derived from SECRET_KEY (never SECRET_KEY itself,
    so a signature made here is useless as a session signature and vice versa)."""
    own = config.get("ARTIFACT_KEY")
    if own:
        return own if isinstance(own, bytes) else str(own).encode()
    secret = config.get("SECRET_KEY")
    if not secret:
        raise ArtifactConfigError("SECRET_KEY (or KERNEL_ARTIFACT_KEY) must be set")
    raw = secret if isinstance(secret, bytes) else str(secret).encode()
    return hmac.new(raw, b"kernel artifact urls", hashlib.sha256).digest()


def service_url_for(
    config: Mapping[str, object], name: str, *, kernel_url: str, now: float | None = None
) -> str:
    """`KERNEL_SERVICE_URL` for a job: the signed prefix under ``kernel_url`` (the server's
    public URL), with the key and lifetime from the settings."""
    ttl = config.get("ARTIFACT_TTL") or DEFAULT_TTL
    assert isinstance(ttl, int | float)  # settings.check made it a number
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


def mimetype_of(name: str) -> str:
    mime, encoding = mimetypes.guess_type(name)
    # A .tgz must arrive as the bytes on disk: a Content-Encoding header would make some
    # clients (wget2, browsers) unpack it on the way.
    if mime is None or encoding is not None:
        return "application/octet-stream"
    if name.endswith(".sh"):
        return "text/plain"
    return mime

"""Pushing an uploaded file to servers: one job (kind ``file``) whose run on each host
downloads the file from the server's signed, expiring URL and writes it atomically, checked
by its SHA-256 (the command is core/shell.py's `file_push`).

The URL is `services/artifacts.py`'s signing with a scope of its own (a signature for a
service's files opens no upload, and the other way round): ``/file-downloads/<id>/<expires>/
<signature>``. It travels in the run's environment (``KERNEL_FILE_URL``), which job answers
show by name only, so viewers of the job cannot fetch the file.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping
from typing import Any

from kernel.server.core import shell
from kernel.server.core.shell import RemoteCommand
from kernel.server.models.files import Upload
from kernel.server.services.artifacts import DEFAULT_TTL, sign, signing_key, verify

KIND = "file"
URL_PREFIX = "/file-downloads"
SCOPE = "file-downloads"
DEFAULT_TIMEOUT = 1800.0  # seconds per host: a large file over a slow link


def _ttl(config: Mapping[str, Any]) -> float:
    return float(config.get("ARTIFACT_TTL") or DEFAULT_TTL)


def download_url(
    config: Mapping[str, Any], upload_id: str, *, kernel_url: str, now: float | None = None
) -> str:
    expires = int((time.time() if now is None else now) + _ttl(config))
    signature = sign(signing_key(config), upload_id, expires, scope=SCOPE)
    return f"{kernel_url.rstrip('/')}{URL_PREFIX}/{upload_id}/{expires}/{signature}"


def check_download(
    config: Mapping[str, Any], upload_id: str, expires: str, signature: str, *, now: float
) -> str | None:
    """None if the URL is valid now, else why not ("bad signature" / "expired")."""
    return verify(signing_key(config), upload_id, expires, signature, now=now, scope=SCOPE)


def command(
    upload: Upload,
    *,
    path: str,
    mode: str,
    owner: str | None,
    timeout: float,
    url: str,
) -> RemoteCommand:
    return RemoteCommand(
        cmd=shell.file_push(path, sha256=upload.sha256, size=upload.size, mode=mode, owner=owner),
        env={"KERNEL_FILE_URL": url},
        timeout=timeout,
        title=f"push {upload.name or upload.id} to {path}"[:255],
    )


def keep_until(
    upload: Upload, config: Mapping[str, Any], now: dt.datetime, timeout: float
) -> dt.datetime:
    """An upload being pushed is kept until its URL expires and the runs could have ended."""
    need = now + dt.timedelta(seconds=_ttl(config) + timeout)
    return max(upload.expires_at, need)

"""Fetching a file from one server: its bytes, through the agent (a command prints its size
and base64 text: the agent's output is text), capped at FILES_MAX_FETCH.

Not a job: the answer is the bytes, and a job would store them as a run's output. The
request is in the audit log like every other (who, which server, which path).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from kernel.agent_client import AgentClient, AgentError
from kernel.exceptions import AgentFailed, InvalidInput, NotFound, TooLarge
from kernel.server.core import shell
from kernel.server.files.storage import size_text
from kernel.server.models.servers import Server

TIMEOUT = 120.0  # seconds the command may take on the host


@dataclass(frozen=True)
class Fetched:
    data: bytes
    sha256: str


def fetch(server: Server, path: str, *, cap: int, connect_timeout: float) -> Fetched:
    """The file at ``path`` on ``server``: NotFound, InvalidInput (not a regular file),
    TooLarge (over ``cap``) or AgentFailed (no proper answer), each saying so."""
    cmd = shell.file_fetch(path, cap)
    if not server.agent_url:
        raise InvalidInput(f"server {server.name} has not joined yet (no agent URL)")
    try:
        with AgentClient(
            server.agent_url,
            server.agent_key,
            timeout=connect_timeout,
            tls_fingerprint=server.tls_fingerprint,
        ) as client:
            result = client.exec(cmd, timeout=TIMEOUT)
    except AgentError as e:
        raise AgentFailed(f"{server.name} did not answer: {e}") from None
    why = _last_line(result.stderr)
    if result.exit_code == shell.EXIT_FETCH_NO_FILE:
        raise NotFound(f"{server.name}: {why}")
    if result.exit_code == shell.EXIT_FETCH_NOT_A_FILE:
        raise InvalidInput(f"{server.name}: {why}")
    if result.exit_code == shell.EXIT_FETCH_TOO_LARGE:
        raise TooLarge(f"{server.name}: {why} (FILES_MAX_FETCH, {size_text(cap)})")
    if result.exit_code != 0:
        what = f"exit {result.exit_code}" if result.exit_code is not None else result.state
        raise AgentFailed(f"{server.name}: reading {path} failed ({what}): {why}")
    if result.truncated:
        raise TooLarge(
            f"{server.name}: {path} does not fit in the agent's output (its max_output_bytes); "
            f"lower FILES_MAX_FETCH ({cap} bytes) or raise the agent's cap"
        )
    head, _, body = result.stdout.partition("\n")
    try:
        size = int(head)
        data = base64.b64decode(body.strip(), validate=True)
    except (ValueError, binascii.Error):
        raise AgentFailed(f"{server.name}: the answer for {path} is not size + base64") from None
    if len(data) > cap:
        raise TooLarge(f"{server.name}: {path} grew past the cap of {size_text(cap)} while read")
    if len(data) != size:
        raise AgentFailed(f"{server.name}: {path} changed while it was read; try again")
    return Fetched(data, hashlib.sha256(data).hexdigest())


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    line = lines[-1] if lines else "no message"
    return line.removeprefix("kernel: ")[:500]

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

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from kernel.exceptions import Conflict, Expired, InvalidInput, NotAllowed
from kernel.server.auth.credentials import new_token, token_hash
from kernel.server.core.db import utcnow
from kernel.server.core.text import iso
from kernel.server.inventory.tlspin import ServerPin
from kernel.server.models.servers import EnrollToken, Server


# -- tokens --------------------------------------------------------------------------------------
def issue_token(s: Session, srv: Server, ttl: float) -> tuple[str, dt.datetime]:
    """A fresh token for ``srv``, valid ``ttl`` seconds; earlier ones stop working. The caller
    commits."""
    revoke_tokens(s, srv)
    secret = new_token("ke_")
    expires = utcnow() + dt.timedelta(seconds=ttl)
    s.add(EnrollToken(server_id=srv.id, token_hash=token_hash(secret), expires_at=expires))
    s.flush()
    return secret, expires


def revoke_tokens(s: Session, srv: Server) -> None:
    s.execute(delete(EnrollToken).where(EnrollToken.server_id == srv.id))


def install_command(base: str, token: str, pin: ServerPin | None = None) -> str:
    # Plain `| bash`: the script takes root itself (sudo only when not root already), so the
    # same line works in a root shell on a minimal host without sudo.
    url = shlex.quote(f"{base}/agent/install.sh?token={token}")
    return f"curl -fsSL {curl_tls(pin)}{url} | bash"


def curl_tls(pin: ServerPin | None) -> str:
    """curl's options for the server's pin (tlspin.py), ending in a space; "" for none."""
    if pin is None:
        return ""
    insecure = "" if pin.verified else "--insecure "
    # Quoted although base64 needs it only for the ";" between pins: the line reads the same
    # whatever the pin.
    return f"{insecure}--pinnedpubkey '{pin.pin}' "


def enroll_info(
    base: str, token: str, expires: dt.datetime, pin: ServerPin | None = None
) -> dict[str, Any]:
    return {
        "token": token,
        "expires_at": iso(expires),
        "command": install_command(base, token, pin),
    }


def live_token(s: Session, token: str) -> tuple[EnrollToken, Server]:
    """The token's row and server, or the precise reason it cannot be used."""
    if not token or len(token) > 200:
        raise NotAllowed("unknown enrollment token")
    row = s.scalars(select(EnrollToken).where(EnrollToken.token_hash == token_hash(token))).first()
    if row is None:
        raise NotAllowed("unknown enrollment token (never issued, or replaced by a newer one)")
    srv = s.get(Server, row.server_id)
    if srv is None or srv.removed_at is not None:
        raise Conflict("this token's server has been removed")
    if row.used_at is not None:
        raise Conflict("this enrollment token has already been used")
    if row.expires_at <= utcnow():
        raise Expired("this enrollment token has expired; ask for a new install command")
    return row, srv


# -- the served files ----------------------------------------------------------------------------
@cache
def package_file(*parts: str) -> bytes:
    return resources.files("kernel").joinpath(*parts).read_bytes()


def agent_file() -> bytes:
    return package_file("agent.py")


def allow_ips_for(base: str, configured: str | None) -> str:
    """The address(es) agents will see the server connect from (for ``allow_ips``)."""
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


def install_script(
    base: str,
    token: str | None = None,
    key: str | None = None,
    allow: str = "",
    pin: ServerPin | None = None,
) -> str:
    """The packaged install.sh with this server's values (``base`` URL, the token and key of an
    enrolling server, the ``allow_ips`` it gets, the TLS pin its downloads and enrollment
    use) prepended as defaults."""
    values = {
        "KERNEL_URL": base,
        "KERNEL_AGENT_SOURCE": f"{base}/agent/kernel-agent.py",
        "KERNEL_AGENT_SHA256": hashlib.sha256(agent_file()).hexdigest(),
    }
    if pin is not None:
        values["KERNEL_TLS_PIN"] = pin.pin
        values["KERNEL_TLS_INSECURE"] = "" if pin.verified else "1"
    if token and key:
        values["KERNEL_AGENT_KEY"] = key
        values["KERNEL_ENROLL_TOKEN"] = token
        if allow:
            values["KERNEL_AGENT_CONF"] = f"allow_ips = {allow}"
    lines = ["#!/usr/bin/env bash", "# Defaults filled in by the Kernel server that served this."]
    for k, v in values.items():
        lines.append(f'if [ -z "${{{k}+x}}" ]; then {k}={shlex.quote(v)}; fi; export {k}')
    body = package_file("deploy", "install.sh").decode()
    if body.startswith("#!"):
        body = body.split("\n", 1)[1] if "\n" in body else ""
    return "\n".join(lines) + "\n" + body


# -- joining -------------------------------------------------------------------------------------
def agent_url_from(addr: str | None, port: int) -> str:
    if not addr:
        raise InvalidInput("cannot tell the enrolling host's address")
    ip = ipaddress.ip_address(addr.split("%", 1)[0])
    host = f"[{ip}]" if ip.version == 6 else str(ip)
    return f"http://{host}:{port}"

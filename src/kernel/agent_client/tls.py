"""TLS pinning: an agent's certificate is checked by its SHA-256 fingerprint (taken at
enrollment, trust on first use as SSH does), not by a CA."""

from __future__ import annotations

import functools
import hashlib
import socket
import ssl
from urllib.parse import urlsplit

from kernel.exceptions import AgentUnreachable


def normalize_fingerprint(text: str) -> str:
    """'AB:CD:…' or 'abcd…' → 64 lower-case hex chars."""
    fp = text.replace(":", "").strip().lower()
    if len(fp) != 64 or any(c not in "0123456789abcdef" for c in fp):
        raise ValueError(f"not a SHA-256 fingerprint: {text!r}")
    return fp


def fetch_tls_fingerprint(url: str, timeout: float = 10.0) -> str:
    """SHA-256 (hex) of the certificate the agent at ``url`` presents; trust on first use."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError(f"not an https URL: {url!r}")
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((parts.hostname, parts.port or 443), timeout) as raw,
            ctx.wrap_socket(raw, server_hostname=parts.hostname) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError) as e:
        raise AgentUnreachable(f"{url}: {e}") from e
    if not der:
        raise AgentUnreachable(f"{url}: no certificate")
    return hashlib.sha256(der).hexdigest()


class _PinMismatch(Exception):
    pass


@functools.cache
def _tls_context(*, pinned: bool) -> ssl.SSLContext:
    """One shared context per kind: building one costs ~0.1 s, which a fan-out to hundreds of
    agents must not pay per client. A pinned agent is checked by fingerprint after the
    handshake (see _pin_error), not by a CA."""
    ctx = ssl.create_default_context()
    if pinned:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx

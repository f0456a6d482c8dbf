"""The enrollment one-liner pinned to the server's own TLS key (curl ``--pinnedpubkey``).

When the public URL is https, the line a new host runs fetches a script that becomes root:
whoever answers it owns the host. So the line names the key it must find — the SHA-256 of
the certificate's SubjectPublicKeyInfo, ``sha256//<base64>``, curl's own pin format — and
curl refuses anything else before it sends a byte. The pin is the ``TLS_PIN`` setting, or,
unset, taken from the certificate the ``URL`` setting presents (fetched once per process; a
failed fetch shows the unpinned line and is retried a minute later).

``--insecure`` is added only when that certificate does not verify against the system's CAs
(a self-signed one): with a pin the key is what is trusted, so skipping the CA check gives
nothing away.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from kernel.exceptions import ConfigError

log = logging.getLogger(__name__)
PIN = re.compile(r"sha256//[A-Za-z0-9+/]{43}=")
FETCH_TIMEOUT = 3.0
RETRY_AFTER = 60.0  # seconds before a failed fetch is tried again


@dataclass(frozen=True)
class ServerPin:
    pin: str  # one or more ``sha256//…``, joined by ";" (curl's format)
    verified: bool  # the certificate verifies against the system CAs for the URL's host


def spki_pin(der_certificate: bytes) -> str:
    """curl's ``--pinnedpubkey`` form of a certificate's public key."""
    key = x509.load_der_x509_certificate(der_certificate).public_key()
    spki = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return "sha256//" + base64.b64encode(hashlib.sha256(spki).digest()).decode()


def check_pins(text: str) -> str:
    """A ``TLS_PIN`` value: one or more pins separated by ``;`` (a second key for a rotation),
    spaces allowed; refused with the setting's name otherwise."""
    pins = [p.strip() for p in text.split(";") if p.strip()]
    bad = [p for p in pins if not PIN.fullmatch(p)]
    if not pins or bad:
        raise ConfigError(
            f"setting TLS_PIN (KERNEL_TLS_PIN) must be sha256//<base64 of 32 bytes>[;…], "
            f"not {text!r}"
        )
    return ";".join(pins)


def fetch(url: str, timeout: float = FETCH_TIMEOUT) -> ServerPin:
    """The pin of the certificate ``url`` presents, and whether it verifies against the
    system CAs. Raises OSError (ssl.SSLError included) when no certificate can be had."""
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 443
    anything = ssl.create_default_context()
    anything.check_hostname = False
    anything.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection((host, port), timeout) as raw,
        anything.wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    if not der:
        raise ssl.SSLError(f"{url} presented no certificate")
    try:
        with (
            socket.create_connection((host, port), timeout) as raw,
            ssl.create_default_context().wrap_socket(raw, server_hostname=host),
        ):
            verified = True
    except ssl.SSLError:  # (a certificate error is one): not trusted by the system CAs
        verified = False
    return ServerPin(spki_pin(der), verified)


class PinSource:
    """The pin for the lines of one process: ``TLS_PIN``, or what the public URL (the ``URL``
    setting) presents, fetched once and kept. `warm` fetches it at start-up, so that no
    request waits (a request may be holding the database's write lock); a line asked for
    before that waits for it; a failed fetch is retried in the background, RETRY_AFTER after
    the last, logged each time. A line to any other base (``URL`` unset: the request's own
    host) gets ``TLS_PIN`` or no pin: the server never connects where a request's ``Host``
    header points (``/static/agent/install.sh`` needs no login)."""

    def __init__(
        self, configured: str | None, url: str | None = None, timeout: float = FETCH_TIMEOUT
    ) -> None:
        self.configured = check_pins(configured) if configured else None
        self.url = url.rstrip("/") if url else None
        self.timeout = timeout
        self._lock = threading.Lock()
        self._found: dict[str, ServerPin] = {}
        self._failed: dict[str, float] = {}  # URL → when to try again
        self._retrying: set[str] = set()

    def warm(self) -> None:
        """Fetch the pin of ``URL`` in the background (at start-up)."""
        if self.url and urlsplit(self.url).scheme == "https":
            threading.Thread(target=self._fetch, args=(self.url,), daemon=True).start()

    def for_url(self, base: str) -> ServerPin | None:
        """The pin for a line to ``base``; None for http, or when none can be had."""
        if urlsplit(base).scheme != "https":
            return None
        if base.rstrip("/") != self.url:
            return self._unfetched()
        if base in self._found:
            return self._found[base]
        retry_at = self._failed.get(base)
        if retry_at is None:
            return self._fetch(base)
        if time.monotonic() >= retry_at and base not in self._retrying:
            self._retrying.add(base)
            threading.Thread(target=self._fetch, args=(base,), daemon=True).start()
        return self._unfetched()

    def _fetch(self, base: str) -> ServerPin | None:
        with self._lock:  # one fetch at a time; a request that waits gets its answer
            try:
                if base in self._found:
                    return self._found[base]
                try:
                    seen = fetch(base, self.timeout)
                except (OSError, ValueError) as e:
                    self._failed[base] = time.monotonic() + RETRY_AFTER
                    log.warning(
                        "cannot read the TLS certificate of %s (%s): install one-liners %s",
                        base, e, "pin TLS_PIN and skip the CA check" if self.configured
                        else "are shown without a pin; set TLS_PIN",
                    )  # fmt: skip
                    return self._unfetched()
                if self.configured:
                    if seen.pin not in self.configured.split(";"):
                        log.warning(
                            "TLS_PIN does not match the key %s presents (%s): install "
                            "one-liners use TLS_PIN", base, seen.pin,
                        )  # fmt: skip
                    seen = ServerPin(self.configured, seen.verified)
                self._found[base] = seen
                self._failed.pop(base, None)
                return seen
            finally:
                self._retrying.discard(base)

    def _unfetched(self) -> ServerPin | None:
        # With a pin set but no certificate seen, the line cannot know whether the system CAs
        # would accept it: it skips the CA check, the pin still has to match.
        return ServerPin(self.configured, verified=False) if self.configured else None

"""A TLS terminator in front of a ``kernel-server``, as nginx would be (docs/reverse-proxy.md),
in a few lines of Python's ssl: it takes TLS on its own address with its own certificate, adds
``X-Forwarded-For`` (the client) and ``X-Forwarded-Proto: https`` to each request, and passes
the answer back. One request per connection (it sends ``Connection: close`` upstream), with
a ``Content-Length`` body if any: how curl and install.sh talk to it."""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
from pathlib import Path


def make_cert(directory: Path, name: str, host: str) -> tuple[Path, Path]:
    """A self-signed certificate (and its key) for ``host`` (an IP address)."""
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", f"/CN={host}", "-addext", f"subjectAltName=IP:{host}",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def make_ca_signed_cert(directory: Path, host: str) -> tuple[Path, Path, Path]:
    """A private CA and a certificate for ``host`` it signed: (ca, cert, key). A process that
    trusts the CA (``SSL_CERT_FILE``, curl's ``--cacert``) sees a certificate that verifies."""
    ca, ca_key = directory / "ca.pem", directory / "ca.key"
    cert, key, csr = directory / "signed.pem", directory / "signed.key", directory / "signed.csr"
    ext = directory / "signed.ext"
    ext.write_text(f"subjectAltName=IP:{host}\n")
    for cmd in (
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=kernel-test-ca", "-keyout", str(ca_key), "-out", str(ca)],
        ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={host}",
         "-keyout", str(key), "-out", str(csr)],
        ["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
         "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(cert)],
    ):  # fmt: skip
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    return ca, cert, key


def openssl_pin(cert: Path) -> str:
    """curl's pin of ``cert``, the way curl's own documentation computes it (openssl)."""
    pubkey = subprocess.run(
        ["openssl", "x509", "-in", str(cert), "-pubkey", "-noout"], capture_output=True, check=True
    ).stdout
    der = subprocess.run(
        ["openssl", "pkey", "-pubin", "-outform", "der"], input=pubkey, capture_output=True,
        check=True,
    ).stdout  # fmt: skip
    digest = subprocess.run(
        ["openssl", "dgst", "-sha256", "-binary"], input=der, capture_output=True, check=True
    ).stdout
    b64 = subprocess.run(["base64"], input=digest, capture_output=True, check=True).stdout
    return "sha256//" + b64.decode().strip()


class TlsProxy:
    def __init__(
        self, cert: Path, key: str | Path, upstream: tuple[str, int], host: str, port: int = 0
    ) -> None:
        self.upstream = upstream
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(str(cert), str(key))
        self.sock = socket.create_server((host, port))
        self.sock.settimeout(0.2)  # the accept loop looks at _stop this often
        self.host, self.port = host, self.sock.getsockname()[1]
        self.url = f"https://{host}:{self.port}"
        self.accepted = 0  # connections taken (tests check who connected)
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()

    def __enter__(self) -> TlsProxy:
        self._spawn(self._accept)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.sock.close()
        for t in self._threads:
            t.join(10)

    def _spawn(self, target, *args) -> None:  # type: ignore[no-untyped-def]
        t = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(t)
        t.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, peer = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            self._spawn(self._serve, conn, peer[0])

    def _serve(self, raw: socket.socket, client_ip: str) -> None:
        raw.settimeout(30)
        try:
            with self.ctx.wrap_socket(raw, server_side=True) as tls:
                head = b""
                while b"\r\n\r\n" not in head and len(head) < 65536:
                    chunk = tls.recv(65536)
                    if not chunk:
                        return
                    head += chunk
                head, _, body = head.partition(b"\r\n\r\n")
                line, *fields = head.split(b"\r\n")
                length = 0
                for f in fields:
                    name, _, value = f.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(body) < length and (chunk := tls.recv(65536)):
                    body += chunk
                skip = (b"connection:", b"x-forwarded-")
                fields = [f for f in fields if not f.lower().startswith(skip)]
                fields += [b"X-Forwarded-For: " + client_ip.encode(), b"X-Forwarded-Proto: https",
                           b"Connection: close"]  # fmt: skip
                with socket.create_connection(self.upstream, timeout=30) as up:
                    up.sendall(b"\r\n".join([line, *fields]) + b"\r\n\r\n" + body)
                    while chunk := up.recv(65536):
                        tls.sendall(chunk)
        except (OSError, ssl.SSLError, ValueError):
            pass  # a client that refused our certificate (a pin!) or went away

"""Secrets sealed at rest: agent keys are stored encrypted (AES-256-GCM), with a key the server
holds outside the database (a file in the data dir by default, SEALING_KEY_FILE), so a dump or
a stolen copy of the database — a shared PostgreSQL above all — does not command the fleet.

`SealedText` is a column type: values are sealed when written and opened when read, in ORM
and Core statements alike, with the keyring of the engine they go through (`attach`). A
stored value is ``sealed:v1:<key id>:<nonce>:<ciphertext>`` (base64url); a plain value from
before sealing is read as it is and sealed on the next start (`seal_plaintext`).
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Engine, String, text
from sqlalchemy.types import TypeDecorator

from kernel.exceptions import ConfigError

PREFIX = "sealed:v1:"
_ATTR = "kernel_keyring"


class Keyring:
    """The sealing key of this installation (and older ones, to open what they sealed)."""

    def __init__(self, keys: list[bytes]) -> None:
        if not keys or any(len(k) != 32 for k in keys):
            raise ConfigError("a sealing key is 32 bytes")
        self.keys = {_key_id(k): AESGCM(k) for k in keys}
        self.current = _key_id(keys[0])

    @classmethod
    def from_file(cls, path: Path) -> Keyring:
        """The key file (hex, first line the key in use, later lines retired keys), made
        with a fresh key (mode 0600) when it does not exist."""
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(os.urandom(32).hex() + "\n")
        try:
            lines = [x.strip() for x in path.read_text().splitlines() if x.strip()]
            return cls([bytes.fromhex(x) for x in lines])
        except (OSError, ValueError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot read the sealing key file {path}: {e}") from None

    def seal(self, plain: str) -> str:
        nonce = os.urandom(12)
        ct = self.keys[self.current].encrypt(nonce, plain.encode("utf-8"), None)
        return PREFIX + ":".join((self.current, _b64(nonce), _b64(ct)))

    def open(self, stored: str) -> str:
        if not stored.startswith(PREFIX):
            return stored  # written before sealing existed; sealed at the next start
        try:
            key_id, nonce, ct = stored[len(PREFIX) :].split(":")
            aead = self.keys[key_id]
            return aead.decrypt(_unb64(nonce), _unb64(ct), None).decode("utf-8")
        except KeyError:
            raise ConfigError(
                f"a sealed value needs key {key_id!r}, which is not in the sealing key file "
                "(SEALING_KEY_FILE): restore the file this database was used with"
            ) from None
        except (ValueError, InvalidTag):
            raise ConfigError("a sealed value is damaged or not from this installation") from None


def _key_id(key: bytes) -> str:
    return hashlib.sha256(b"kernel sealing key id" + key).hexdigest()[:12]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text_: str) -> bytes:
    return base64.urlsafe_b64decode(text_ + "=" * (-len(text_) % 4))


def attach(engine: Engine, keyring: Keyring) -> None:
    """Seal and open `SealedText` columns of ``engine`` with ``keyring``."""
    setattr(engine.dialect, _ATTR, keyring)


def _keyring(dialect: Any) -> Keyring:
    found: Keyring | None = getattr(dialect, _ATTR, None)
    if found is None:
        raise ConfigError("no sealing keyring on this database engine (sealing.attach)")
    return found


class SealedText(TypeDecorator[str]):
    """A string stored sealed (see the module doc); ``length`` bounds the stored form."""

    impl = String
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Any) -> str | None:
        if value is None or value.startswith(PREFIX):
            return value
        return _keyring(dialect).seal(value)

    def process_result_value(self, value: str | None, dialect: Any) -> str | None:
        if value is None:
            return None
        return _keyring(dialect).open(value)


def seal_plaintext(engine: Engine, table: str, column: str) -> int:
    """Seal the values of ``table.column`` written before sealing existed; how many."""
    keyring = _keyring(engine.dialect)
    with engine.begin() as conn:
        rows = conn.execute(
            text(f"SELECT id, {column} FROM {table} WHERE {column} NOT LIKE :p"),  # noqa: S608
            {"p": PREFIX + "%"},
        ).all()
        for row_id, plain in rows:
            conn.execute(
                text(f"UPDATE {table} SET {column} = :v WHERE id = :i"),  # noqa: S608
                {"v": keyring.seal(plain), "i": row_id},
            )
    return len(rows)

"""The original Kernel's machine list, brought over (``kernel-server import-legacy``;
docs/migrating.md).

The original server kept its machines as ``machine_list.txt``: a pickle of ``{name:
mod_kernel.Machine}``, each with ``url``, ``service_active``, ``service_enabled`` and
``online``. A pickle is a program — loading one can call any function — so it is read by an
unpickler that can build only a stand-in for that one class and plain values; anything else
stops the load before it is called.

Kernel's server speaks only the signed protocol (v2) and the Go agent has no key, so an
imported machine becomes a *pending* server (tag ``legacy``) with a fresh key and one-time
token: the one-line installer run on the host replaces the Go agent by Kernel's on the same
port (install.sh stops, disables and saves the old service) and joins it.
"""

from __future__ import annotations

import datetime as dt
import io
import pickle
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from kernel.exceptions import InvalidInput
from kernel.names import NAME_RULE, is_valid_name
from kernel.server.audit import log as audit_log
from kernel.server.auth.credentials import new_agent_key
from kernel.server.core.db import utcnow
from kernel.server.core.text import printable as shown
from kernel.server.inventory import enrollment
from kernel.server.models.servers import InitRecord, Server, name_key

MACHINE_LIST = "machine_list.txt"
MAX_PICKLE_BYTES = 16 * 1024 * 1024
GO_AGENT_PORT = 8001  # the Go agent always listened on :8001 (main.go)
LEGACY_TAG = "legacy"
# What a checkout of the original kernel-server holds (any one of them will do).
MARKERS = ("mod_kernel.py", MACHINE_LIST, "static/service", "static/init")


def check_checkout(root: Path) -> Path:
    """``root`` resolved, if it looks like the original server's checkout; else one line."""
    where = shown(str(root))
    if not root.exists():
        raise InvalidInput(f"{where} does not exist")
    if not root.is_dir():
        raise InvalidInput(f"{where} is not a folder")
    if not any((root / m).exists() for m in MARKERS):
        raise InvalidInput(
            f"{where} is not a checkout of the original kernel-server: it has none of "
            + ", ".join(MARKERS)
        )
    return root.resolve()


def download_url(root: Path) -> str | None:
    """The original server's base URL (``DOWNLOAD_URL`` in mod_kernel.py), if it is there:
    scripts that download from it need changing."""
    try:
        text = (root / "mod_kernel.py").read_bytes()[:1_000_000].decode("utf-8", "replace")
    except OSError:
        return None
    m = re.search(r"""^DOWNLOAD_URL\s*=\s*["']([^"'\s]+)["']""", text, re.M)
    return m.group(1).rstrip("/") if m else None


# -- reading the pickle --------------------------------------------------------------------------
class LegacyMachine:
    """What ``mod_kernel.Machine`` is unpickled as: its attributes, and nothing it could do."""

    def __init__(self, url: object = None) -> None:
        self.state: dict[str, object] = {"url": url}

    def __setstate__(self, state: object) -> None:
        self.state = state if isinstance(state, dict) else {}


def _reconstructor(cls: object, base: object, state: object) -> LegacyMachine:
    # Protocol 0 and 1 build plain objects as copyreg._reconstructor(cls, object, None).
    if cls is LegacyMachine and base is object and state is None:
        return LegacyMachine.__new__(LegacyMachine)
    raise pickle.UnpicklingError("copyreg._reconstructor with other arguments")


class Refused(pickle.UnpicklingError):
    """The pickle asked for something other than a Machine or a plain value."""


_ALLOWED: dict[tuple[str, str], Any] = {
    ("mod_kernel", "Machine"): LegacyMachine,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("copy_reg", "_reconstructor"): _reconstructor,  # as protocols 0-2 name it
    ("builtins", "object"): object,  # _reconstructor's second argument
    ("__builtin__", "object"): object,
    ("builtins", "set"): set,
    ("__builtin__", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("__builtin__", "frozenset"): frozenset,
}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise Refused(f"{module}.{name}") from None


def load_machine_list(data: bytes) -> dict[object, object]:
    """Unpickle the original's machine list with only Machine and plain values allowed."""
    try:
        loaded = _Unpickler(io.BytesIO(data)).load()
    except Refused as e:
        raise InvalidInput(
            f"{MACHINE_LIST} was not read: it asks for {e}, and only mod_kernel.Machine and "
            "plain values are accepted (a pickle can run code; nothing in it was run)"
        ) from None
    except Exception as e:  # noqa: BLE001 - a damaged pickle fails in many ways: one line each
        raise InvalidInput(f"{MACHINE_LIST} is not a readable pickle ({_reason(e)})") from None
    if not isinstance(loaded, dict):
        kind = {list: "a list", tuple: "a tuple", str: "text", int: "a number"}.get(
            type(loaded), type(loaded).__name__
        )
        raise InvalidInput(
            f"{MACHINE_LIST} holds {kind}, not the original's {{name: Machine}} dict"
        )
    return loaded


def _reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}"[:200] if text else type(e).__name__


def read_machine_list(root: Path) -> dict[object, object] | None:
    """The checkout's machine list, or None when it has none (a server that never ran)."""
    path = root / MACHINE_LIST
    try:
        if not path.exists():
            return None
        if not path.is_file():
            raise InvalidInput(f"{shown(str(path))} is not a file")
        with open(path, "rb") as f:
            data = f.read(MAX_PICKLE_BYTES + 1)
    except OSError as e:
        raise InvalidInput(f"cannot read {shown(str(path))}: {e.strerror or e}") from None
    if len(data) > MAX_PICKLE_BYTES:
        raise InvalidInput(f"{shown(str(path))} is larger than {MAX_PICKLE_BYTES} bytes")
    return load_machine_list(data)


# -- planning ------------------------------------------------------------------------------------
@dataclass
class MachinePlan:
    """One machine of the list and what the import does with it."""

    name: str  # as shown (repr when it is not text)
    url: str  # the Go agent's URL, as shown
    action: str  # "add", "exists", "skip"
    reason: str = ""  # for "exists" and "skip"; notes about the URL for "add"
    notes: list[str] = field(default_factory=list)
    command: str = ""  # the install line (after apply)
    expires_at: dt.datetime | None = None


def url_notes(url: object) -> list[str]:
    """What to know about a Go agent's URL when Kernel's agent takes its place."""
    if not isinstance(url, str):
        return [f"its url is {type(url).__name__}, not text: find the host by its name"]
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return [f"its url {shown(url)!r} cannot be parsed: find the host by its name"]
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return [f"its url {shown(url)!r} is not an http(s) URL: find the host by its name"]
    port = port or (443 if parts.scheme == "https" else 80)
    if port != GO_AGENT_PORT:
        return [
            f"the original reached it through port {port} (a proxy or port forward?): Kernel's "
            f"agent listens on {GO_AGENT_PORT} as the Go agent did, and the server will use "
            f"http://<the address it enrolls from>:{GO_AGENT_PORT}; change that afterwards "
            "with `kernel servers edit NAME --url …` if it must go another way"
        ]
    return []


def plan(s: Session | None, machines: dict[object, object]) -> list[MachinePlan]:
    """What importing ``machines`` would do, given the inventory (None: an empty one)."""
    existing: dict[str, Server] = {}
    if s is not None:
        for srv in s.scalars(select(Server).where(Server.removed_at.is_(None))):
            existing[srv.name_key] = srv
    seen: dict[str, str] = {}
    plans: list[MachinePlan] = []
    for raw_name, machine in machines.items():
        state = machine.state if isinstance(machine, LegacyMachine) else None
        url = state.get("url") if state is not None else None
        p = MachinePlan(name=shown(raw_name), url=shown(url) if url is not None else "", action="")
        plans.append(p)
        if state is None:
            p.action, p.reason = "skip", f"it is {type(machine).__name__}, not a Machine"
        elif not is_valid_name(raw_name):
            p.action = "skip"
            p.reason = (
                f"the name is not allowed in Kernel (it {NAME_RULE}); add it by hand under "
                "another name with `kernel enroll NEW-NAME`"
            )
        else:
            assert isinstance(raw_name, str)
            key = name_key(raw_name)
            if key in seen:
                p.action = "skip"
                p.reason = f"the same name as {seen[key]!r} to Kernel (case does not count)"
            elif key in existing:
                p.action, p.reason = "exists", _exists(existing[key])
            else:
                p.action = "add"
                p.notes = url_notes(url)
            seen[key] = raw_name
    return plans


def _exists(srv: Server) -> str:
    if LEGACY_TAG not in (srv.tags or []):
        return f"a server named {srv.name!r} exists already (not an import); left alone"
    if srv.state == "pending":
        return (
            "imported before, not joined yet; `kernel enroll "
            f"{srv.name}` prints a fresh install command"
        )
    return f"imported before and joined ({srv.state})"


def apply(
    s: Session,
    plans: list[MachinePlan],
    *,
    base_url: str,
    token_ttl: float,
    actor: str,
    init_done: Sequence[tuple[str, str]] = (),
) -> int:
    """Add the planned machines as pending servers, each with its one-time install line;
    returns how many were added. ``init_done``: init scripts (name, SHA-256) recorded as
    already run on them — the original ran them when each machine joined it — so joining
    Kernel does not run them again. The caller commits (one transaction for the lot)."""
    added: list[str] = []
    now = utcnow()
    for p in plans:
        if p.action != "add":
            continue
        srv = Server(
            name=p.name,
            description=f"imported from the original Kernel; its Go agent was {p.url}",
            tags=[LEGACY_TAG],
            agent_key=new_agent_key(),
            state="pending",
            facts={},
        )
        s.add(srv)
        s.flush()
        for script, sha256 in init_done:
            s.add(InitRecord(server_id=srv.id, script=script, sha256=sha256, job_id=None,
                             state="ok", created_at=now, finished_at=now))  # fmt: skip
        token, p.expires_at = enrollment.issue_token(s, srv, token_ttl)
        p.command = enrollment.install_command(base_url, token)
        added.append(p.name)
    if added:
        audit_log.write(
            s,
            actor=actor,
            source="cli",
            action="server.import_legacy",
            result="ok",
            target=f"{len(added)} servers",
            hosts=added,
            detail={"init_done": [name for name, _ in init_done]},
        )
    return len(added)

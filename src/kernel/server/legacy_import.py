"""``kernel-server import-legacy DIR``: an original Kernel installation brought over, and the
report of what was done (docs/migrating.md). The machines are the inventory's part
(inventory/legacy.py), the folders the services' (services/legacy.py); this runs both
against this server's data dir and database, and words the report."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from kernel.exceptions import InvalidInput, KernelError
from kernel.server.app import create_app
from kernel.server.components import components
from kernel.server.core.files import sha256_hex
from kernel.server.core.settings import data_dir_from
from kernel.server.core.text import printable as shown
from kernel.server.inventory import legacy as machines
from kernel.server.models import installation
from kernel.server.services import legacy as folders

ACTOR = "kernel-server import-legacy"
# The one-liner's side of it (deploy/install.sh): said once under the commands.
REPLACES = (
    "The command stops and disables the Go agent's service, keeps a copy of it in "
    "/var/lib/kernel-agent/legacy/, and starts Kernel's agent on port 8001 in its place."
)


def run_import(
    checkout: Path,
    *,
    dry_run: bool,
    url: str | None,
    token_ttl: int | None,
    run_init: bool = False,
) -> Iterator[str]:
    """Import (or with ``dry_run`` only plan) and yield the report line by line."""
    root = machines.check_checkout(checkout)
    machine_list = machines.read_machine_list(root)  # refused before anything else is done
    _base_url(url)  # a bad --url too
    data_dir = data_dir_from(None)
    app = _open_app(data_dir, dry_run)
    try:
        yield from _run(app, root, data_dir, machine_list, dry_run, url, token_ttl, run_init)
    finally:
        if app is not None:
            components(app).close()


def _open_app(data_dir: Path, dry_run: bool) -> Any:
    """The app on this server's settings (no examples copied: the original's folders are
    what goes in). A dry run on a data dir never used before opens nothing, so that it
    creates nothing: its inventory is empty."""
    used = any((data_dir / f).exists() for f in ("secret_key", installation.ID_FILE))
    if dry_run and not used:
        return None
    return create_app({"MIGRATE": not dry_run, "INSTALL_EXAMPLES": False})


def _run(
    app: Any,
    root: Path,
    data_dir: Path,
    machine_list: dict[object, object] | None,
    dry_run: bool,
    url: str | None,
    token_ttl: int | None,
    run_init: bool,
) -> Iterator[str]:
    config = app.config if app is not None else {}
    base = _base_url(url or config.get("URL"))
    ttl = float(token_ttl or config.get("ENROLL_TOKEN_TTL") or 3600)
    old_url = machines.download_url(root)
    db = components(app).db if app is not None else None

    try:
        if db is None:
            plans = machines.plan(None, machine_list or {})
        else:
            with db.reading() as s:
                plans = machines.plan(s, machine_list or {})
    except SQLAlchemyError as e:
        raise KernelError(f"cannot read the inventory: {_first_line(e)}") from None
    to_add = [p for p in plans if p.action == "add"]
    if to_add and not dry_run and base is None:
        raise InvalidInput(
            "the install commands need this server's address as the hosts reach it: set URL "
            "(KERNEL_URL) or pass --url"
        )
    found = folders.plan(root, data_dir, old_url)

    # The original's init scripts now in the data dir (an admin's different one is not theirs).
    init_done = [] if run_init else [
        (i.name, sha256_hex(i.data)) for i in found.init if i.action in ("copy", "same")
    ]  # fmt: skip
    copied = added = 0
    if not dry_run:
        copied = folders.apply(found, data_dir)
        if to_add:
            assert db is not None and base is not None
            try:
                with db.session() as s:
                    added = machines.apply(
                        s, plans, base_url=base, token_ttl=ttl, actor=ACTOR, init_done=init_done
                    )
            except IntegrityError:
                raise KernelError(
                    "a server with one of these names was added meanwhile; run again"
                ) from None
            except SQLAlchemyError as e:
                raise KernelError(f"cannot add the servers: {_first_line(e)}") from None

    yield f"Importing the original Kernel from {shown(str(root))}" + (
        " (dry run: nothing is changed)" if dry_run else ""
    )
    yield from _machines_report(machine_list, plans, dry_run, init_done)
    yield from _services_report(found, data_dir, dry_run)
    yield from _init_report(found, data_dir, dry_run)
    for problem in found.problems:
        yield f"! {problem}"
    yield ""
    yield _summary(plans, found, dry_run, added, copied)


def _base_url(url: object) -> str | None:
    if not url:
        return None
    text = str(url).rstrip("/")
    if not text.isascii() or any(c.isspace() or not c.isprintable() for c in text):
        raise InvalidInput(
            f"--url '{shown(text)}' is not a URL (spaces, control or non-ASCII characters)"
        )
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises for a bad port
    except ValueError:
        raise InvalidInput(f"--url {text!r} is not a URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"--url {text!r} is not an http(s) URL")
    return text


def _first_line(e: BaseException) -> str:
    return (str(getattr(e, "orig", None) or e).strip().splitlines() or [type(e).__name__])[0]


def _verb(dry_run: bool, done: str, would: str) -> str:
    return would if dry_run else done


def _machines_report(
    machine_list: dict[object, object] | None,
    plans: list[machines.MachinePlan],
    dry_run: bool,
    init_done: list[tuple[str, str]],
) -> Iterator[str]:
    yield ""
    if machine_list is None:
        yield f"Machines: the checkout has no {machines.MACHINE_LIST} (no machines to import)"
        return
    yield f"Machines ({machines.MACHINE_LIST}: {len(plans)}):"
    expires = None
    for p in plans:
        where = f" ({p.url})" if p.url else ""
        if p.action == "add":
            added = _verb(dry_run, "added", "would be added")
            yield f"  + {p.name}{where}: {added} as a pending server (tag {machines.LEGACY_TAG})"
            if p.command:
                yield "      on it, as root, run:"
                yield f"      {p.command}"
                expires = p.expires_at
            for note in p.notes:
                yield f"      note: {note}"
        elif p.action == "exists":
            yield f"  = {p.name}{where}: {p.reason}"
        else:
            yield f"  ! {p.name}{where}: not imported: {p.reason}"
    if any(p.action == "add" for p in plans):
        yield "  " + REPLACES
        if init_done:
            yield (
                "  The original's init scripts count as run on them (the original ran them when "
                "each joined it); `--run-init` runs them again when they join Kernel."
            )
        if expires is not None:
            yield (
                f"  Each command works once, until {expires:%Y-%m-%d %H:%M} UTC; "
                "`kernel enroll NAME` gives a fresh one."
            )


def _services_report(found: folders.Folders, data_dir: Path, dry_run: bool) -> Iterator[str]:
    yield ""
    if not found.services:
        yield "Services: the checkout has no static/service/ folders"
        return
    yield f"Services (static/service/ -> {shown(str(data_dir / 'service'))}):"
    for item in found.services:
        yield "  " + _item_line(item, dry_run)
        if item.action != "skip":
            if item.problems:
                yield "      rejected by the catalogue (it cannot be deployed until fixed):"
                for problem in item.problems:
                    yield f"        - {problem}"
            else:
                yield f"      accepted by the catalogue (unit {item.unit})"
        yield from _hint_lines(item)


def _init_report(found: folders.Folders, data_dir: Path, dry_run: bool) -> Iterator[str]:
    yield ""
    if not found.init:
        yield "Init scripts: the checkout has no static/init/ scripts"
        return
    yield f"Init scripts (static/init/ -> {shown(str(data_dir / 'init'))}), in the order they run:"
    for item in found.init:
        if item.kind == "init" and not item.name:  # a file the scan refused
            yield f"  ! not imported: {item.reason}"
            continue
        yield "  " + _item_line(item, dry_run)
        yield from _hint_lines(item)
    if found.others_in_init:
        yield (
            f"  also in {shown(str(data_dir / 'init'))} (not the original's; they run on "
            f"joining servers too): {', '.join(found.others_in_init)}"
        )


def _item_line(item: folders.Item, dry_run: bool) -> str:
    if item.action == "copy":
        return f"+ {item.name}: {_verb(dry_run, 'copied', 'would be copied')}"
    if item.action == "same":
        return f"= {item.name}: imported before (the same files are there)"
    if item.action == "conflict":
        return f"! {item.name}: not copied: {item.reason}"
    return f"! {item.name}: not imported: {item.reason}"


def _hint_lines(item: folders.Item) -> Iterator[str]:
    for h in item.hints:
        yield f"      {h.script} line {h.line_no} downloads from the original server:"
        yield f"        {h.line}"
        if h.replacement:
            yield "      write instead:"
            yield f"        {h.replacement}"
        if h.note:
            yield f"      ({h.note})"


def _summary(
    plans: list[machines.MachinePlan],
    found: folders.Folders,
    dry_run: bool,
    added: int,
    copied: int,
) -> str:
    items = found.services + found.init
    to_add = sum(p.action == "add" for p in plans)
    to_copy = sum(i.action == "copy" for i in items)
    left = sum(p.action == "skip" for p in plans) + sum(
        i.action in ("skip", "conflict") for i in items
    )
    tail = f"; {left} left out (see '!' above)" if left else ""
    if dry_run:
        if not to_add and not to_copy:
            return f"Dry run: nothing to do, {_nothing(plans, items)}{tail}."
        return (
            f"Dry run: {_count(to_add, 'server')} would be added and {to_copy} folders or "
            f"scripts copied{tail}. Nothing was changed."
        )
    if not added and not copied:
        return f"Nothing changed: {_nothing(plans, items)}{tail}."
    refresh = (
        " A running server shows new services after `kernel services refresh`." if copied else ""
    )
    return (
        f"Done: {_count(added, 'server')} added, {copied} folders or scripts copied{tail}.{refresh}"
    )


def _nothing(plans: list[machines.MachinePlan], items: list[folders.Item]) -> str:
    before = any(p.action == "exists" for p in plans) or any(i.action == "same" for i in items)
    return "everything was imported before" if before else "the checkout holds nothing to import"


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")

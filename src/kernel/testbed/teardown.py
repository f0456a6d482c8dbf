"""Removing beds: from their record (pids, netns, mounts, cgroups, bridge), idempotently, and
sweeping leftovers of crashed runs — only objects named with our ``kt<4 hex>`` prefixes."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from pathlib import Path

from kernel.exceptions import TestbedError
from kernel.testbed import names, net
from kernel.testbed.state import RUN_DIR, BedRecord, bed_prefixes
from kernel.testbed.system import (
    cgroup2_root,
    cgroup_dir,
    cgroup_remove,
    same_process,
    sh,
)


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path`` in our mount namespace, deepest first."""
    prefix = str(path).rstrip("/")
    found = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mounts").read_text().splitlines():
            target = line.split()[1].replace("\\040", " ")
            if target == prefix or target.startswith(prefix + "/"):
                found.append(target)
    return sorted(set(found), key=lambda t: -t.count("/"))


def unmount_all(path: Path) -> None:
    for target in mounts_under(path):
        try:
            sh(["umount", target])
        except TestbedError:
            sh(["umount", "-l", target])  # still busy: detach now, freed when unused


def destroy(bed: BedRecord) -> None:
    """Remove everything ``bed`` made. Safe to call twice, or on a half-made bed."""
    errors: list[str] = []

    def attempt(what: str, fn: object, *args: object) -> None:
        try:
            fn(*args)  # type: ignore[operator]
        except (TestbedError, OSError) as e:
            errors.append(f"{what}: {e}")

    if cgroup2_root() is not None:
        attempt("processes", cgroup_remove, cgroup_dir(bed.prefix))
    for host in bed.hosts:
        # Launchers are outside the host cgroups; they exit once the host's PID 1 is gone.
        attempt("launcher", _wait_gone, host.launcher_pid)
        # Light agents are in their cgroups; this covers a pid recorded before it joined one.
        if same_process(host.pid, host.pid_start):
            with contextlib.suppress(OSError):
                os.kill(host.pid or 0, signal.SIGKILL)
    attempt("mounts", unmount_all, bed.dir)
    attempt(
        "network",
        net.remove,
        [h.netns for h in bed.hosts],
        [h.veth for h in bed.hosts] + [bed.bridge],
    )
    if not mounts_under(bed.dir):
        attempt("files", shutil.rmtree, bed.dir)
    if errors:
        raise TestbedError(f"testbed {bed.prefix} not fully removed: " + "; ".join(errors))


def _wait_gone(pid: int | None, timeout: float = 5.0) -> None:
    if not pid:
        return
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
            return
        time.sleep(0.02)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def removable(bed: BedRecord, include_owned: bool) -> bool:
    """Detached beds always; beds of another process only once that process has died."""
    return bed.detached or (include_owned and not bed.owner_alive())


def sweep() -> list[str]:
    """Remove our objects (``kt<4 hex>-…``) that no bed accounts for: no state, or a state
    whose owner died. Beds that are detached or owned by a live process are left alone.

    Decided per prefix when its object is met: a bed records its state before it makes any
    object, so a bed being made by another process right now is protected.
    """
    verdicts: dict[str, bool] = {}

    def orphan(name: str) -> bool:
        prefix = names.prefix_of(name)
        if prefix is None:
            return False
        if prefix not in verdicts:
            if (RUN_DIR / prefix).exists():
                try:
                    bed = BedRecord.load(prefix)
                    verdicts[prefix] = not bed.detached and not bed.owner_alive()
                except TestbedError:  # half-written state: judge by the directory's age
                    verdicts[prefix] = time.time() - (RUN_DIR / prefix).stat().st_mtime > 60
            else:
                verdicts[prefix] = True
        return verdicts[prefix]

    removed: list[str] = []
    root = cgroup2_root()
    if root is not None and (root / "kernel-testbed").is_dir():
        for cg in (root / "kernel-testbed").iterdir():
            if cg.is_dir() and orphan(cg.name):
                cgroup_remove(cg)
                removed.append(f"cgroup {cg.name}")
    netns = [n for n in net.list_netns() if orphan(n)]
    links = [n for n in net.list_links() if orphan(n)]
    net.remove(netns, links)
    removed += [f"netns {n}" for n in netns] + [f"link {n}" for n in links]
    for prefix in bed_prefixes():
        if orphan(prefix):
            unmount_all(RUN_DIR / prefix)
            if not mounts_under(RUN_DIR / prefix):
                shutil.rmtree(RUN_DIR / prefix, ignore_errors=True)
                removed.append(f"dir {RUN_DIR / prefix}")
    return removed

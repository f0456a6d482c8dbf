"""Thin I/O helpers for the testbed: commands, requirements, cgroups, processes, waiting."""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from kernel.exceptions import TestbedError

T = TypeVar("T")

LIGHT_TOOLS = ("ip", "nsenter", "mount", "umount", "python3", "bash")
FULL_TOOLS = (*LIGHT_TOOLS, "unshare", "pivot_root", "mknod", "hostname", "setpriv")
SYSTEMD_CANDIDATES = ("/lib/systemd/systemd", "/usr/lib/systemd/systemd")
CGROUP_GROUP = "kernel-testbed"


def sh(args: Sequence[str], *, input: str | None = None, timeout: float = 30) -> str:
    """Run a command; its stdout, or TestbedError with its stderr."""
    try:
        proc = subprocess.run(
            list(args), input=input, capture_output=True, text=True, timeout=timeout
        )
    except FileNotFoundError as e:
        raise TestbedError(f"{args[0]}: command not found") from e
    except subprocess.TimeoutExpired as e:
        raise TestbedError(f"`{' '.join(args)}` did not finish in {timeout:g} s") from e
    if proc.returncode != 0:
        raise TestbedError(f"`{' '.join(args)}` failed: {proc.stderr.strip() or proc.stdout}")
    return proc.stdout


def agent_python() -> str:
    """The interpreter for light agents: $KERNEL_TESTBED_PYTHON (e.g. a Python 3.8 to check
    the agent's compatibility), else the system's own, as on a real server (not a shim)."""
    chosen = os.environ.get("KERNEL_TESTBED_PYTHON")
    if chosen:
        return chosen
    for path in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.access(path, os.X_OK):
            return path
    return shutil.which("python3") or "python3"


def systemd_binary() -> str | None:
    return next((p for p in SYSTEMD_CANDIDATES if os.access(p, os.X_OK)), None)


def cgroup2_root() -> Path | None:
    """Where the cgroup v2 hierarchy is mounted (pure v2 or the hybrid ``unified`` dir)."""
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return None
    for line in mounts:
        fields = line.split()
        if len(fields) > 2 and fields[2] == "cgroup2":
            return Path(fields[1])
    return None


def unsupported_reason(mode: str) -> str | None:
    """Why test hosts of ``mode`` cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "the testbed needs root (network namespaces, mounts, cgroups)"
    missing = [t for t in (FULL_TOOLS if mode == "full" else LIGHT_TOOLS) if not shutil.which(t)]
    if missing:
        return f"missing tools: {', '.join(missing)} (scripts/install installs them)"
    if not Path("/proc/self/ns/net").exists():
        return "this kernel has no network namespaces"
    root = cgroup2_root()
    if root is None or not os.access(root, os.W_OK):
        return "no writable cgroup v2 hierarchy (needed to track and stop host processes)"
    if mode == "full":
        if systemd_binary() is None:
            return "systemd is not installed (needed for full hosts)"
        if "overlay" not in Path("/proc/filesystems").read_text():
            return "the kernel has no overlay filesystem (needed for full hosts)"
    return None


def require(mode: str) -> None:
    reason = unsupported_reason(mode)
    if reason:
        raise TestbedError(f"cannot make {mode} test hosts: {reason}")


# -- cgroups: every host lives in its own cgroup, so stopping it reaches every process ------


def cgroup_dir(*parts: str) -> Path:
    root = cgroup2_root()
    if root is None:
        raise TestbedError("no cgroup v2 hierarchy mounted")
    return root.joinpath(CGROUP_GROUP, *parts)


def cgroup_procs(cg: Path) -> list[int]:
    """Every pid in ``cg`` and its descendants."""
    pids: list[int] = []
    if not cg.is_dir():
        return pids
    for procs in cg.rglob("cgroup.procs"):
        with contextlib.suppress(OSError):
            pids += [int(p) for p in procs.read_text().split()]
    return pids


def cgroup_kill(cg: Path, timeout: float = 10) -> None:
    """SIGKILL everything in ``cg`` and wait until it is empty."""
    if not cg.is_dir():
        return
    kill_file = cg / "cgroup.kill"
    deadline = time.monotonic() + timeout
    while cgroup_procs(cg):
        if kill_file.exists():
            with contextlib.suppress(OSError):
                kill_file.write_text("1")
        else:  # kernels before 5.14: one by one
            for pid in cgroup_procs(cg):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise TestbedError(f"processes in {cg} survive SIGKILL: {cgroup_procs(cg)}")
        time.sleep(0.02)


def cgroup_remove(cg: Path) -> None:
    """Kill what is left in ``cg`` and remove it with its children (made by a host's systemd)."""
    if not cg.is_dir():
        return
    cgroup_kill(cg)
    for d in sorted((p for p in cg.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        with contextlib.suppress(FileNotFoundError):
            d.rmdir()
    with contextlib.suppress(FileNotFoundError):
        cg.rmdir()


def join_cgroup_argv(cg: Path, argv: Sequence[str]) -> list[str]:
    """``argv`` prefixed so that it runs inside cgroup ``cg`` (the shell execs it, same pid)."""
    return ["sh", "-c", f'echo $$ > "{cg}/cgroup.procs" && exec "$@"', "sh", *argv]


# -- processes -----------------------------------------------------------------------------


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks (with the pid, a unique identity), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def same_process(pid: int | None, started: int | None) -> bool:
    """Whether ``pid`` still names the process we recorded (not a reused pid)."""
    return bool(pid) and started is not None and start_time(pid or 0) == started


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def memory_bytes(pids: Sequence[int]) -> int:
    """Proportional set size of these processes (shared pages split fairly between them)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
    return total


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, step: float = 0.05) -> T:
    """Call ``probe`` until it returns something truthy; TestbedError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TestbedError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(step)


def healthz(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether an agent answers ``GET /healthz`` with 200 (direct, never through a proxy)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()

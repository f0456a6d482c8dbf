"""What a bed made, on disk: ``/run/kernel-testbed/<prefix>/state.json``.

The record is what teardown works from (pids, namespaces, mounts, cgroups), so a bed left by
`kernel-testbed up` or by a crashed run can be removed later by another process.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kernel.exceptions import TestbedError
from kernel.testbed import names
from kernel.testbed.system import same_process, start_time

RUN_DIR = Path(os.environ.get("KERNEL_TESTBED_RUN_DIR", "/run/kernel-testbed"))


@dataclass
class HostRecord:
    name: str
    index: int
    ip: str
    mode: str  # "full" | "light"
    key: str
    dir: str  # the host's own directory (a tmpfs holding the overlay upper, for full hosts)
    pid: int | None = None  # light: the agent; full: the host's systemd (PID 1 inside)
    pid_start: int | None = None
    launcher_pid: int | None = None  # full: the `unshare` parent waiting for the host's PID 1
    agent: bool = True  # False: no agent is started or installed (e.g. to test enrollment)
    stopped: bool = False

    @property
    def agent_url(self) -> str:
        return names.agent_url(self.ip)

    @property
    def netns(self) -> str:
        return self.name

    @property
    def veth(self) -> str:
        return self.name


@dataclass
class BedRecord:
    prefix: str
    subnet: str
    owner_pid: int | None  # None: detached (made by `kernel-testbed up`), lives until `down`
    owner_start: int | None
    hosts: list[HostRecord] = field(default_factory=list)

    @property
    def dir(self) -> Path:
        return RUN_DIR / self.prefix

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.subnet)

    @property
    def gateway_ip(self) -> str:
        return str(names.gateway_ip(self.network))

    @property
    def bridge(self) -> str:
        return names.bridge_name(self.prefix)

    @property
    def detached(self) -> bool:
        return self.owner_pid is None

    def owner_alive(self) -> bool:
        return same_process(self.owner_pid, self.owner_start)

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / "state.json.tmp"
        tmp.write_text(json.dumps(asdict(self), indent=1))
        os.chmod(tmp, 0o600)  # holds agent keys
        tmp.replace(self.dir / "state.json")

    @classmethod
    def load(cls, prefix: str) -> BedRecord:
        path = RUN_DIR / prefix / "state.json"
        try:
            raw = json.loads(path.read_text())
            raw["hosts"] = [HostRecord(**h) for h in raw.get("hosts", [])]
            return cls(**raw)
        except (OSError, ValueError, TypeError) as e:
            raise TestbedError(f"unreadable testbed state {path}: {e}") from e


def owned_by_me() -> tuple[int, int | None]:
    pid = os.getpid()
    return pid, start_time(pid)


@contextlib.contextmanager
def registry_lock() -> Iterator[None]:
    """Serialise prefix and subnet allocation between processes."""
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    with open(RUN_DIR / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def bed_prefixes() -> list[str]:
    """Prefixes that have a directory in the run dir (whether or not the state is readable)."""
    if not RUN_DIR.is_dir():
        return []
    return sorted(p.name for p in RUN_DIR.iterdir() if names.PREFIX_RE.match(p.name))


def all_beds() -> list[BedRecord]:
    beds = []
    for prefix in bed_prefixes():
        with contextlib.suppress(TestbedError):
            beds.append(BedRecord.load(prefix))
    return beds

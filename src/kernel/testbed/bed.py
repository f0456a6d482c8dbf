"""The Testbed: a bridge in the root namespace and N hosts on it.

    with Testbed(n=3, mode="full") as bed:
        bed.gateway_ip, bed.hosts[0].ip, bed.hosts[0].run("systemctl is-system-running")

A bed is torn down on exit, on error, on Ctrl-C, SIGTERM and SIGHUP (and at interpreter exit if left
open). ``Testbed(..., detached=True)`` leaves it running for ``kernel-testbed down``.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import os
import secrets
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from types import TracebackType

import kernel
from kernel.exceptions import TestbedError
from kernel.testbed import full, names, net, teardown
from kernel.testbed.host import BOOT_TIMEOUT, READY_TIMEOUT, Host
from kernel.testbed.state import (
    BedRecord,
    HostRecord,
    all_beds,
    bed_prefixes,
    owned_by_me,
    registry_lock,
)
from kernel.testbed.system import cgroup_dir, require

MODES = ("light", "full")
PACKAGE_DIR = Path(kernel.__file__).resolve().parent


class Testbed:
    """Test hosts in network namespaces, reachable from the root namespace's ``gateway_ip``."""

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        n: int = 1,
        mode: str = "light",
        *,
        detached: bool = False,
        capacity: int | None = None,
        allow_ips: str | None = None,
        agent: bool = True,
        agent_file: Path | None = None,
        install_script: Path | None = None,
    ) -> None:
        if mode not in MODES:
            raise TestbedError(f"unknown host mode {mode!r} (choose light or full)")
        if not isinstance(n, int) or n < 0:
            raise TestbedError(f"the number of hosts must be a whole number >= 0, not {n!r}")
        self.n, self.mode, self.detached = n, mode, detached
        self._capacity = max(capacity or 0, n, 1)
        self._allow = allow_ips
        self.agent = agent
        # The environment may point at another build (e.g. an older agent release).
        env = os.environ.get
        self.agent_file = Path(
            agent_file or env("KERNEL_TESTBED_AGENT_FILE") or PACKAGE_DIR / "agent.py"
        )
        self.install_script = Path(
            install_script
            or env("KERNEL_TESTBED_INSTALL_SCRIPT")
            or PACKAGE_DIR / "deploy" / "install.sh"
        )
        self.hosts: list[Host] = []
        self.record: BedRecord | None = None
        self._closed = False
        self._save_lock = threading.Lock()  # hosts boot in threads and each saves

    # -- identity ---------------------------------------------------------------------------

    @property
    def _rec(self) -> BedRecord:
        if self.record is None:
            raise TestbedError("the testbed is not up")
        return self.record

    prefix = property(lambda self: self._rec.prefix)
    gateway_ip = property(lambda self: self._rec.gateway_ip)
    subnet = property(lambda self: self._rec.network)
    dir = property(lambda self: self._rec.dir)

    @property
    def cgroup(self) -> Path:
        return cgroup_dir(self.prefix)

    def allow_ips(self, host_ip: str) -> str:
        """A host agent's ``allow_ips``: by default the gateway (the server's side) and the
        host's own address (install.sh checks the agent from the host itself)."""
        return self._allow or f"{self.gateway_ip},{host_ip}"

    @property
    def launch_script(self) -> Path:
        return self.dir / "launch.sh"

    def save(self) -> None:
        with self._save_lock:
            if self.record is not None and not self._closed:
                self.record.hosts = [h.record for h in self.hosts]
                self.record.save()

    def __repr__(self) -> str:
        where = self.record.prefix if self.record else "down"
        return f"<Testbed {where} {len(self.hosts)} hosts>"

    # -- lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> Testbed:
        self.up()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.down()

    def up(self) -> Testbed:
        """Make the bridge and the first ``n`` hosts; returns once every agent answers."""
        require(self.mode)
        if not self.agent_file.is_file():
            raise TestbedError(f"agent file not found: {self.agent_file}")
        try:
            self._reserve()
            if not self.detached:
                install_signal_handlers()
                atexit.register(self.down)
            rec = self._rec
            net.create_bridge(rec.bridge, rec.gateway_ip, rec.network.prefixlen)
            self.cgroup.mkdir(parents=True, exist_ok=True)
            self.launch_script.write_text(full.LAUNCH_SCRIPT)
            if self.n:
                self.add_hosts(self.n)
        except BaseException:
            self.down()
            raise
        return self

    def _reserve(self) -> None:
        """Pick a prefix and a subnet no other bed (of any process) uses."""
        with registry_lock():
            beds = all_beds()
            taken = set(bed_prefixes()) | {n.split("-")[0] for n in net.list_links()}
            prefix = names.new_prefix(taken)
            used = [ipaddress.IPv4Network(b.subnet) for b in beds]
            used += [ipaddress.IPv4Interface(a).network for a in net.root_addresses()]
            try:
                subnet = names.allocate_subnet(used, self._capacity)
            except ValueError as e:
                raise TestbedError(str(e)) from e
            owner, started = (None, None) if self.detached else owned_by_me()
            self.record = BedRecord(prefix, str(subnet), owner, started)
            self.record.save()

    def add_hosts(
        self,
        k: int,
        mode: str | None = None,
        timeout: float | None = None,
        agent: bool | None = None,
    ) -> list[Host]:
        """Add ``k`` hosts (of the bed's mode unless given) and wait until they answer.

        With ``agent=False`` (default: the bed's) hosts get no agent: full hosts are only
        booted, light hosts are just a namespace; ``key`` is then unused.
        """
        mode = mode or self.mode
        with_agent = self.agent if agent is None else agent
        if mode not in MODES:
            raise TestbedError(f"unknown host mode {mode!r} (choose light or full)")
        require(mode)
        if mode == "full" and not self.install_script.is_file():
            raise TestbedError(f"install script not found: {self.install_script}")
        rec = self._rec
        start = len(self.hosts)
        if start + k > names.capacity(rec.network):
            raise TestbedError(f"{start + k} hosts do not fit in {rec.subnet}; pass capacity=")
        new = [Host(self, self._new_record(start + i, mode, with_agent)) for i in range(k)]
        self.hosts += new
        self.save()  # recorded before anything exists, so a crash here is still cleaned up
        net.add_hosts(rec.bridge, [(h.name, h.ip) for h in new], rec.network.prefixlen)
        for h in new:
            h.launch()
        self.save()
        wait = timeout or (BOOT_TIMEOUT if mode == "full" else READY_TIMEOUT + 0.2 * k)

        def ready(h: Host) -> None:
            h.wait_booted(wait)
            if h.record.agent:
                h.wait_ready(wait)

        _parallel(new, ready)
        self.save()
        return new

    def _new_record(self, index: int, mode: str, agent: bool) -> HostRecord:
        name = names.host_name(self.prefix, index)
        return HostRecord(
            name=name,
            index=index,
            ip=str(names.host_ip(self._rec.network, index)),
            mode=mode,
            key=secrets.token_hex(32),
            dir=str(self.dir / name),
            agent=agent,
        )

    def down(self) -> None:
        """Remove every host, namespace, mount, cgroup and the bridge. Idempotent."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.down)
        if self.record is None:
            return
        try:
            teardown.destroy(self.record)
        finally:
            for h in self.hosts:
                h.close_clients()
                with contextlib.suppress(TestbedError):
                    h._reap()

    close = down

    @classmethod
    def attach(cls, prefix: str) -> Testbed:
        """A handle on a bed made by another process (e.g. ``kernel-testbed up``)."""
        if not names.PREFIX_RE.match(prefix):
            raise TestbedError(
                f"not a testbed name: {prefix!r} (ktXXXX, see `kernel-testbed list`)"
            )
        rec = BedRecord.load(prefix)
        bed = cls(0, rec.hosts[0].mode if rec.hosts else "light", detached=True)
        bed.record = rec
        bed.hosts = [Host(bed, h) for h in rec.hosts]
        return bed


def _parallel(hosts: list[Host], fn: Callable[[Host], object]) -> None:
    """Run ``fn`` for every host at once; the first failure is raised after all finished."""
    if not hosts:
        return
    pool = ThreadPoolExecutor(max_workers=min(len(hosts), 32), thread_name_prefix="testbed")
    futures = [pool.submit(fn, h) for h in hosts]
    try:
        wait(futures)
    finally:
        # On Ctrl-C, do not sit out the boot timeouts: teardown kills what the threads wait for.
        pool.shutdown(wait=False, cancel_futures=True)
    errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        first = errors[0]
        more = f" (and {len(errors) - 1} more hosts failed)" if len(errors) > 1 else ""
        raise TestbedError(f"{first}{more}") from first


_handlers_installed = False


def install_signal_handlers() -> None:
    """Turn SIGTERM/SIGHUP into KeyboardInterrupt, so they unwind like Ctrl-C: `with` blocks
    and fixtures tear beds down, and pytest stops the session instead of failing one test."""
    global _handlers_installed
    if _handlers_installed or threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) in (signal.SIG_DFL, None):
            signal.signal(sig, _exit_on_signal)
    _handlers_installed = True


def _exit_on_signal(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)

"""One test host and its faults. Every fault has an undo:

kill_agent  (SIGKILL)     -> restart_agent()   (a full host's systemd also restarts it)
freeze      (SIGSTOP)     -> thaw()
cut         (link down)   -> restore()
restart_agent                                   (nothing to undo)
stop        (whole host)  -> start()            (a full host keeps its files, like a reboot)
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from kernel.exceptions import TestbedError
from kernel.testbed import full, light, net
from kernel.testbed.state import HostRecord
from kernel.testbed.system import (
    cgroup_kill,
    cgroup_procs,
    healthz,
    join_cgroup_argv,
    memory_bytes,
    same_process,
    start_time,
    wait_for,
)

if TYPE_CHECKING:
    from kernel.agent_client import AgentClient
    from kernel.testbed.bed import Testbed

BOOT_TIMEOUT = 60.0
READY_TIMEOUT = 30.0


class Host:
    """A test host of a :class:`Testbed`: ``name``, ``ip``, ``agent_url``, ``key``, ``mode``."""

    def __init__(self, bed: Testbed, record: HostRecord) -> None:
        self.bed = bed
        self.record = record
        self._proc: subprocess.Popen[bytes] | None = None  # ours to reap
        self._clients: list[AgentClient] = []

    def __repr__(self) -> str:
        return f"<Host {self.name} {self.ip} {self.mode}>"

    name = property(lambda self: self.record.name)
    ip = property(lambda self: self.record.ip)
    key = property(lambda self: self.record.key)
    mode = property(lambda self: self.record.mode)
    agent_url = property(lambda self: self.record.agent_url)

    @property
    def cgroup(self) -> Path:
        return self.bed.cgroup / self.name

    @property
    def dir(self) -> Path:
        return Path(self.record.dir)

    def client(self, timeout: float = 10.0) -> AgentClient:
        """A new AgentClient for this host's agent (from the gateway's side, like the server).

        Use it in a ``with`` block; any left open are closed when the bed goes down.
        """
        from kernel.agent_client import AgentClient

        client = AgentClient(self.agent_url, self.key, timeout=timeout)
        self._clients.append(client)
        return client

    def close_clients(self) -> None:
        for client in self._clients:
            client.close()
        self._clients.clear()

    # -- running commands independently of the agent ----------------------------------------

    def nsenter_argv(self) -> list[str]:
        if self.mode == "full":
            return full.nsenter_argv(self._init_pid())
        return ["nsenter", f"--net=/run/netns/{self.record.netns}"]

    def run(
        self,
        cmd: str | Sequence[str],
        *,
        input: str | None = None,
        timeout: float = 60,
        check: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` (a list, or a string for ``bash -c``) inside the host via nsenter."""
        argv = ["bash", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        full_argv = join_cgroup_argv(self.cgroup, [*self.nsenter_argv(), *argv])
        try:
            proc = subprocess.run(
                full_argv, input=input, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired as e:
            raise TestbedError(f"{self.name}: {argv!r} did not finish in {timeout:g} s") from e
        if check and proc.returncode != 0:
            raise TestbedError(
                f"{self.name}: {argv!r} exited {proc.returncode}: {proc.stderr.strip()[-2000:]}"
            )
        return proc

    # -- bring-up ---------------------------------------------------------------------------

    def launch(self) -> None:
        """Start the host's processes without waiting (so many hosts boot in parallel)."""
        rec = self.record
        if self.mode == "full":
            full.prepare(self.dir, self.name, self.bed.agent_file, self.bed.install_script)
            self._proc = full.launch(
                self.bed.launch_script,
                rec.netns,
                self.dir,
                self.name,
                self.cgroup,
                self.bed.dir / f"{self.name}.log",
            )
            rec.launcher_pid = self._proc.pid
            rec.pid = rec.pid_start = None
        elif not rec.agent:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.cgroup.mkdir(parents=True, exist_ok=True)
            rec.pid = rec.pid_start = None
        else:
            light.write_key(self.dir, rec.key)
            self._proc = light.spawn_agent(
                self.bed.agent_file, rec.netns, self.dir, self.listen, self.allow_ips, self.cgroup
            )
            rec.pid, rec.pid_start = self._proc.pid, start_time(self._proc.pid)
        rec.stopped = False

    @property
    def allow_ips(self) -> str:
        return self.bed.allow_ips(self.ip)

    @property
    def listen(self) -> str:
        return f"{self.ip}:8001"

    def wait_booted(self, timeout: float = BOOT_TIMEOUT, install: bool = True) -> None:
        """Full hosts: wait for systemd, then (first boot) install the agent with install.sh."""
        if self.mode != "full":
            return
        deadline = time.monotonic() + timeout
        rec = self.record

        def pid1() -> int | None:
            if self._proc is not None and self._proc.poll() is not None:
                raise TestbedError(f"{self.name}: the host exited during boot: {self._log_tail()}")
            return full.init_pid(rec.launcher_pid or 0)

        rec.pid = wait_for(f"{self.name}'s systemd to start", pid1, timeout)
        rec.pid_start = start_time(rec.pid)
        self.bed.save()
        state = wait_for(
            f"{self.name}'s systemd to finish booting",
            self._system_state,
            max(1.0, deadline - time.monotonic()),
        )
        if state not in ("running", "degraded"):
            raise TestbedError(f"{self.name}: systemd is {state!r} after boot")
        if install and rec.agent:
            self._install_agent(max(5.0, deadline - time.monotonic()))

    def _system_state(self) -> str | None:
        proc = self.run(["systemctl", "is-system-running", "--wait"], timeout=BOOT_TIMEOUT)
        state = proc.stdout.strip()
        # Before systemd's own socket is up systemctl says "offline" or cannot connect.
        return state if state in ("running", "degraded", "maintenance", "stopping") else None

    def _install_agent(self, timeout: float) -> None:
        # The copy made at first boot: the source file may have changed since.
        copy = self.dir / "upper" / full.IN_HOST_DIR.lstrip("/") / "kernel-agent.py"
        sha = hashlib.sha256(copy.read_bytes()).hexdigest()
        env = full.install_env(self.key, self.listen, self.allow_ips)
        proc = self.run(full.install_command(env, sha), timeout=timeout)
        if proc.returncode != 0:
            raise TestbedError(
                f"{self.name}: install.sh exited {proc.returncode}:\n"
                f"{(proc.stdout + proc.stderr).strip()[-3000:]}"
            )

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Wait until the agent answers /healthz from the gateway's side."""

        def answering() -> bool:
            if self.mode == "light" and self._proc is not None and self._proc.poll() is not None:
                raise TestbedError(f"{self.name}: the agent exited: {self._log_tail()}")
            return healthz(self.ip, 8001, timeout=0.5)

        wait_for(f"{self.name}'s agent at {self.agent_url}", answering, timeout)

    def _log_tail(self) -> str:
        log = self.bed.dir / f"{self.name}.log" if self.mode == "full" else self.dir / "agent.log"
        try:
            return log.read_text(errors="replace")[-2000:].strip() or "(no output)"
        except OSError:
            return "(no log)"

    # -- faults -----------------------------------------------------------------------------

    def agent_pid(self) -> int:
        """The agent's pid as the host sees it (light hosts: as we see it, the same)."""
        if self.mode == "light":
            if not same_process(self.record.pid, self.record.pid_start):
                raise TestbedError(f"{self.name}: the agent is not running")
            return self.record.pid or 0
        out = self.run(
            ["systemctl", "show", "-p", "MainPID", "--value", "kernel-agent"], check=True
        )
        pid = int(out.stdout.strip() or 0)
        if not pid:
            raise TestbedError(f"{self.name}: kernel-agent.service has no main process")
        return pid

    def _signal_agent(self, sig: signal.Signals) -> None:
        if self.mode == "light":
            os.kill(self.agent_pid(), sig)
        else:
            signame = sig.name.removeprefix("SIG")
            self.run(["kill", "-s", signame, str(self.agent_pid())], check=True)

    def kill_agent(self) -> None:
        """SIGKILL the agent (runs it started keep going, as they would on a real server)."""
        self._signal_agent(signal.SIGKILL)
        if self.mode == "light":
            self._reap()

    def freeze(self) -> None:
        """SIGSTOP the agent: connections are accepted by the kernel but never answered."""
        self._signal_agent(signal.SIGSTOP)

    def thaw(self) -> None:
        self._signal_agent(signal.SIGCONT)

    def cut(self) -> None:
        """Take the host's link down at the bridge: packets to it are lost."""
        net.set_link(self.record.veth, up=False)

    def restore(self) -> None:
        net.set_link(self.record.veth, up=True)

    def restart_agent(self, timeout: float = READY_TIMEOUT) -> None:
        """Restart the agent (the unit on full hosts) and wait until it answers."""
        if self.mode == "full":
            self.run(["systemctl", "restart", "kernel-agent"], check=True)
        else:
            if same_process(self.record.pid, self.record.pid_start):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.record.pid or 0, signal.SIGKILL)
            self._reap()
            self.launch()
            self.bed.save()
        self.wait_ready(timeout)

    def stop(self) -> None:
        """Stop the whole host: every process in it dies at once, as in a power cut."""
        cgroup_kill(self.cgroup)
        self._reap()
        if self.record.launcher_pid and self._proc is None:
            # The launcher of a host we did not start: it exits once its child has died.
            with contextlib.suppress(TestbedError):
                wait_for("the launcher to exit", lambda: not self._launcher_alive(), 5)
        self.record.stopped = True
        self.record.pid = self.record.pid_start = None
        self.bed.save()

    def _launcher_alive(self) -> bool:
        pid = self.record.launcher_pid or 0
        return pid > 0 and os.path.exists(f"/proc/{pid}") and "Z" not in _proc_state(pid)

    def start(self, timeout: float = BOOT_TIMEOUT) -> None:
        """Bring a stopped host back; a full host boots again from its own files."""
        if not self.record.stopped:
            raise TestbedError(f"{self.name} is not stopped")
        self.launch()
        self.bed.save()
        self.wait_booted(timeout, install=False)
        self.bed.save()
        if self.record.agent:
            self.wait_ready(timeout)

    def _reap(self) -> None:
        if self._proc is not None:
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired as e:
                raise TestbedError(f"{self.name}: process {self._proc.pid} did not exit") from e
            self._proc = None

    def _init_pid(self) -> int:
        if not same_process(self.record.pid, self.record.pid_start):
            raise TestbedError(f"{self.name} is not running")
        return self.record.pid or 0

    # -- measurements -----------------------------------------------------------------------

    def memory_bytes(self) -> int:
        """PSS of every process of the host, plus its tmpfs (the overlay upper) if any."""
        total = memory_bytes(cgroup_procs(self.cgroup))
        if os.path.ismount(self.dir):
            st = os.statvfs(self.dir)
            total += (st.f_blocks - st.f_bfree) * st.f_frsize
        return total


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"

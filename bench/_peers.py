"""The peers of bench_peers.py: installing them at pinned versions, and sshd in light test hosts.

Debian packages (OpenSSH, Debian's ``parallel-ssh`` command) come from apt; the PyPI tools
(pyinfra, ansible-core, the parallel-ssh library) go into a virtualenv of their own under the
cache dir, never into the project's .venv. sshd runs in each host's network namespace and
cgroup (where the host's agent runs), on the host's own address, with host keys, a client key
and per-host config and pid files made in a temporary directory: light hosts share this
machine's files, so nothing of the machine's own /etc/ssh or ~/.ssh is used or changed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from kernel.testbed import Host
from kernel.testbed.system import join_cgroup_argv

# Pinned: what the figures in docs/benchmarks.md were measured with.
OPENSSH = "1:9.2p1-2+deb12u10"
DEBIAN_PINS = {
    "openssh-client": OPENSSH,
    "openssh-server": OPENSSH,
    "openssh-sftp-server": OPENSSH,  # pyinfra and Ansible may want sftp; exec does not
    "pssh": "2.3.4-2",  # Debian's parallel-ssh command (the original pssh, ported to Python 3)
    "time": "1.9-0.2",  # GNU time: the peak RSS of each measured process
}
PYPI_PINS = ("pyinfra==3.10.0", "ansible-core==2.19.14", "parallel-ssh==2.16.0.post1")
SSH_PORT = 2222  # the agent listens on 8001
SSHD = "/usr/sbin/sshd"
RC_FILES = (".bashrc", ".bash_profile", ".bash_login", ".profile")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kernel-bench"


def _installed(pkg: str) -> str | None:
    out = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Status}|${Version}", pkg], capture_output=True, text=True
    )
    status, _, version = out.stdout.partition("|")
    return version if out.returncode == 0 and status.endswith(" installed") else None


def ensure_debian() -> dict[str, str]:
    """Install the pinned Debian packages if another version (or none) is there.

    Debian's security updates replace a version in the archive now and then: a pin that apt
    no longer has is a clear error naming it, then update DEBIAN_PINS (and rerun).
    Installing openssh-server starts no sshd where a policy-rc.d forbids it (containers);
    elsewhere the package's own ssh.service may start: the bench never talks to it.
    """
    missing = [f"{p}={v}" for p, v in DEBIAN_PINS.items() if _installed(p) != v]
    if missing:
        print(f"bench_peers: apt-get install {' '.join(missing)}", file=sys.stderr)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]
        if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, stdout=subprocess.DEVNULL)
            subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, check=True)
    return {p: _installed(p) or "?" for p in DEBIAN_PINS}


def ensure_venv() -> Path:
    """A virtualenv with the pinned PyPI tools (made once; its name follows the pins)."""
    tag = hashlib.sha256(" ".join(PYPI_PINS).encode()).hexdigest()[:10]
    venv = cache_dir() / f"peers-{tag}"
    if not (venv / "ok").exists():
        shutil.rmtree(venv, ignore_errors=True)
        print(f"bench_peers: making {venv} ({', '.join(PYPI_PINS)})", file=sys.stderr)
        base = Path(getattr(sys, "_base_executable", sys.executable))
        subprocess.run([str(base), "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
        out = subprocess.run([*pip, *PYPI_PINS], capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"pip install {' '.join(PYPI_PINS)} failed: {out.stderr[-2000:]}")
        (venv / "ok").write_text("\n".join(PYPI_PINS) + "\n")
    return venv


def keygen(path: Path, comment: str) -> str:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
    )
    return path.with_suffix(".pub").read_text().strip()


class SshHosts:
    """One sshd per light test host, on ``<host ip>:2222``, in the host's netns and cgroup.

    ``config`` is an ssh_config every OpenSSH-based peer uses (``ssh -F``): the bench's key,
    its known_hosts, curve25519 and ed25519 only, no multiplexing (each run connects anew,
    as a script run from cron or CI does).
    """

    def __init__(self, hosts: list[Host], tmp: Path) -> None:
        self.hosts = hosts
        self.dir = tmp / "ssh"
        self.dir.mkdir(mode=0o700)
        self.key = self.dir / "id_ed25519"
        self.config = self.dir / "ssh_config"
        self.known_hosts = self.dir / "known_hosts"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._made_privsep_dir = False

    def start(self, timeout: float = 30) -> None:
        d = self.dir
        keygen(self.key, "kernel-bench-peers")
        (d / "authorized_keys").write_text(self.key.with_suffix(".pub").read_text())
        host_pub = keygen(d / "host_ed25519", "kernel-bench-peers-host")
        # One host key for every host (they are light hosts of one machine); each address
        # is listed, so host keys are checked as they would be against real servers.
        self.known_hosts.write_text(
            "".join(f"[{h.ip}]:{SSH_PORT} {host_pub}\n" for h in self.hosts)
        )
        self.config.write_text(
            f"Host *\n  Port {SSH_PORT}\n  User root\n  IdentityFile {self.key}\n"
            "  IdentitiesOnly yes\n  BatchMode yes\n  StrictHostKeyChecking yes\n"
            f"  UserKnownHostsFile {self.known_hosts}\n  GlobalKnownHostsFile /dev/null\n"
            "  KexAlgorithms curve25519-sha256\n  HostKeyAlgorithms ssh-ed25519\n"
            "  ControlMaster no\n  ControlPath none\n  LogLevel ERROR\n"
        )
        privsep = Path("/run/sshd")  # sshd insists on it (Debian's unit makes it)
        if not privsep.exists():
            privsep.mkdir(mode=0o755)
            self._made_privsep_dir = True
        for h in self.hosts:
            conf = d / f"sshd-{h.name}.conf"
            conf.write_text(
                f"ListenAddress {h.ip}:{SSH_PORT}\nHostKey {d / 'host_ed25519'}\n"
                f"PidFile {d / f'sshd-{h.name}.pid'}\n"
                f"AuthorizedKeysFile {d / 'authorized_keys'}\n"
                "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
                "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nUseDNS no\n"
                "PrintMotd no\nPrintLastLog no\n"
                # curve25519 under both its names (paramiko, under pyinfra, knows the older)
                "KexAlgorithms curve25519-sha256,curve25519-sha256@libssh.org\n"
                "MaxStartups 200\nMaxSessions 50\nLogLevel ERROR\n"
                "Subsystem sftp /usr/lib/openssh/sftp-server\n"
            )
            argv = ["nsenter", f"--net=/run/netns/{h.record.netns}", *self._clean_home(), SSHD]
            argv += ["-D", "-e"]
            with open(d / f"sshd-{h.name}.log", "ab") as out:
                self.procs[h.name] = subprocess.Popen(
                    join_cgroup_argv(h.cgroup, [*argv, "-f", str(conf)]),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        deadline = time.monotonic() + timeout
        for h in self.hosts:
            while not _listening(h.ip, SSH_PORT):
                proc = self.procs[h.name]
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = (d / f"sshd-{h.name}.log").read_text(errors="replace")[-1000:]
                    raise RuntimeError(f"sshd on {h.name} did not start: {tail}")
                time.sleep(0.02)

    def _clean_home(self) -> list[str]:
        """sshd in a mount namespace of its own where the login user's shell start-up files
        are empty: bash sources ~/.bashrc for every command sshd runs, and this machine's
        root has `pyenv init` there (~90 ms of CPU per login) — a server's root would not.
        The machine's files are untouched; the agent's commands never read them."""
        empty = self.dir / "empty"
        empty.touch()
        home = Path.home()
        files = [str(p) for p in (home / f for f in RC_FILES) if p.is_file()]
        if not files:
            return []
        binds = " && ".join(f'mount --bind "$0" "{f}"' for f in files)
        return [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            f'{binds} && exec "$@"',
            str(empty),
        ]

    def stop(self) -> None:
        """SIGTERM each sshd by its pid (its per-connection children have exited with their
        runs); the testbed's teardown kills whatever is left in the hosts' cgroups."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.procs.clear()
        if self._made_privsep_dir:
            with contextlib.suppress(OSError):
                Path("/run/sshd").rmdir()


def _listening(ip: str, port: int) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=0.5):
            return True
    except OSError:
        return False

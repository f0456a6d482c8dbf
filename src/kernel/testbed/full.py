"""Full hosts: systemd as PID 1 in new PID + mount + UTS + IPC + cgroup namespaces, over an
overlay of the real root whose upper layer lives on the host's own tmpfs.

Boot: ``nsenter --net=<netns> unshare --pid --mount --uts --ipc --fork`` runs LAUNCH_SCRIPT as
PID 1 of the new PID namespace; the script moves itself into the host's cgroup, enters a cgroup
namespace, builds the root (overlay, /proc, read-only /sys, cgroup2, private /dev, tmpfs /run
and /tmp), pivots into it and execs systemd. The tmpfs with the upper layer is mounted in the
root namespace, so it survives a stop/start of the host like a disk survives a reboot; other
hosts never see it (they only see the lower layer, and pivot away from the rest).
"""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

from kernel.exceptions import TestbedError
from kernel.testbed.system import children, comm, sh, systemd_binary

LAUNCH_SCRIPT = r"""#!/bin/sh
# PID 1 of a new PID namespace, in the host's netns and a fresh mount + UTS namespace.
set -eu
D=$1 NAME=$2 CG=$3 SYSTEMD=$4 DROP_CAPS=$5
echo $$ > "$CG/cgroup.procs"
exec unshare --cgroup -- /bin/sh -eu -c '
D=$1 NAME=$2 SYSTEMD=$3 DROP_CAPS=$4
R=$D/root
mkdir -p "$D/upper" "$D/work" "$R"
mount -t overlay overlay -o "lowerdir=/,upperdir=$D/upper,workdir=$D/work" "$R"
mount -t proc proc "$R/proc"
# Kernel-wide settings stay untouched: /proc/sys is read-only except for the netns part.
mount --bind "$R/proc/sys" "$R/proc/sys"
mount -o remount,bind,ro "$R/proc/sys"
mount --bind "$R/proc/sys/net" "$R/proc/sys/net"
mount -o remount,bind,rw "$R/proc/sys/net"
if [ -e "$R/proc/sysrq-trigger" ]; then
    mount --bind "$R/proc/sysrq-trigger" "$R/proc/sysrq-trigger"
    mount -o remount,bind,ro "$R/proc/sysrq-trigger"
fi
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$R/sys"
mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$R/sys/fs/cgroup"
mount -t tmpfs -o mode=755,nosuid,size=64k tmpfs "$R/dev"
for n in "null 1 3" "zero 1 5" "full 1 7" "random 1 8" "urandom 1 9" "tty 5 0"; do
    set -- $n; mknod -m 666 "$R/dev/$1" c "$2" "$3"
done
mkdir "$R/dev/pts" "$R/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts "$R/dev/pts"
ln -s pts/ptmx "$R/dev/ptmx"
ln -s /proc/self/fd "$R/dev/fd"
ln -s /proc/self/fd/0 "$R/dev/stdin"
ln -s /proc/self/fd/1 "$R/dev/stdout"
ln -s /proc/self/fd/2 "$R/dev/stderr"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$R/dev/shm"
mount -t tmpfs -o mode=755,nosuid,nodev tmpfs "$R/run"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$R/tmp"
hostname "$NAME"
mkdir -p "$R/.oldroot"
cd "$R"
pivot_root . .oldroot
umount -l /.oldroot
rmdir /.oldroot
export container=kernel-testbed
# No kernel modules, clock, raw I/O or kernel log for the host (as systemd-nspawn does).
exec setpriv --bounding-set "$DROP_CAPS" "$SYSTEMD"
' sh "$D" "$NAME" "$SYSTEMD" "$DROP_CAPS"
"""

# Out of the host's capability bounding set, as systemd-nspawn does: no kernel modules, clock,
# raw I/O (debugfs), kernel log, or security-module administration for test hosts.
DROPPED_CAPS = (
    "sys_module sys_time sys_rawio syslog wake_alarm block_suspend mac_admin mac_override"
)

# Where the agent file and install script are copied in each host's upper layer, so a host
# never depends on where the package happens to be installed.
IN_HOST_DIR = "/opt/kernel-testbed"
UPPER_SIZE = "512m"


def prepare(host_dir: Path, hostname: str, agent_file: Path, install_script: Path) -> None:
    """Mount the host's tmpfs and seed its upper layer (first boot only)."""
    host_dir.mkdir(parents=True, exist_ok=True)
    if not os.path.ismount(host_dir):
        sh(["mount", "-t", "tmpfs", "-o", f"mode=700,size={UPPER_SIZE}", "tmpfs", str(host_dir)])
    upper = host_dir / "upper"
    if upper.exists():
        return  # a restart keeps the host's "disk"
    etc = upper / "etc"
    etc.mkdir(parents=True)
    (etc / "hostname").write_text(hostname + "\n")
    (etc / "machine-id").write_text(secrets.token_hex(16) + "\n")
    # Disable (not mask) this machine's enabled units with overlay whiteouts: PostgreSQL,
    # timers and gettys have no business in a test host, and a deploy may still enable them.
    wants_root = Path("/etc/systemd/system")
    for wants in wants_root.glob("*.wants"):
        for unit in wants.iterdir():
            target = upper / unit.relative_to("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            os.mknod(target, 0o600 | 0o020000, os.makedev(0, 0))
    opt = upper / IN_HOST_DIR.lstrip("/")
    opt.mkdir(parents=True)
    (opt / "kernel-agent.py").write_bytes(agent_file.read_bytes())
    (opt / "install.sh").write_bytes(install_script.read_bytes())


def launch(
    launch_script: Path, netns: str, host_dir: Path, hostname: str, cgroup: Path, log: Path
) -> subprocess.Popen[bytes]:
    systemd = systemd_binary()
    if systemd is None:
        raise TestbedError("systemd is not installed")
    cgroup.mkdir(parents=True, exist_ok=True)
    argv = ["nsenter", f"--net=/run/netns/{netns}", "unshare", "--pid", "--mount", "--uts", "--ipc"]
    argv += ["--fork", "--propagation", "private"]
    argv += ["sh", str(launch_script), str(host_dir), hostname, str(cgroup), systemd]
    argv += [",".join("-" + cap for cap in DROPPED_CAPS.split())]
    with open(log, "ab") as out:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def init_pid(launcher_pid: int) -> int | None:
    """The host's PID 1 (as seen from here) once it is systemd, else None."""
    for child in children(launcher_pid):
        if comm(child) == "systemd":
            return child
    return None


def nsenter_argv(pid: int) -> list[str]:
    return ["nsenter", "-t", str(pid), "-a"]


def install_env(key: str, listen: str, allow: str) -> dict[str, str]:
    return {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "KERNEL_URL": "",
        "KERNEL_AGENT_SOURCE": f"{IN_HOST_DIR}/kernel-agent.py",
        "KERNEL_AGENT_KEY": key,
        "KERNEL_AGENT_LISTEN": listen,
        "KERNEL_AGENT_CONF": f"allow_ips = {allow}\n",
    }


def install_command(env: dict[str, str], sha256: str) -> list[str]:
    """``env … bash install.sh`` for nsenter; values are passed as argv, never through a shell."""
    pairs = [f"{k}={v}" for k, v in {**env, "KERNEL_AGENT_SHA256": sha256}.items()]
    return ["env", "-i", *pairs, "bash", f"{IN_HOST_DIR}/install.sh"]

"""The probe as a table of sections, in the spirit of pyinfra's facts: each has a name, the
bash that prints it, and a pure parser of its text (recorded cases per section in
tests/data/probe/sections/). The status probe runs the sections marked ``probe`` every
interval; the join-time environment check (inventory/envcheck.py) runs those marked
``check`` — one collector of host facts for both.

Every step costs host CPU on every host every interval, so the bash forks as little as it can:
/proc and /etc files are read by bash itself (`kr`, `mapfile`, `read`; `$(<f)` would still
fork in bash 5.2), and only df (and systemctl, see probe.py) run as processes.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, replace

from kernel.server.status.report import CpuTimes, Disk, Facts, Metrics

Parser = Callable[[str, Facts, Metrics], tuple[Facts, Metrics]]


@dataclass(frozen=True)
class Section:
    name: str
    bash: str  # the line that prints the section (with the kp/kr helpers, or its own)
    parse: Parser
    helper: str = ""  # a bash function the line calls, defined once at the top
    probe: bool = True  # in the status probe, every interval
    check: bool = False  # in the environment check when a server joins


def _hostname(text: str, f: Facts, m: Metrics) -> tuple[Facts, Metrics]:
    name = text.strip().splitlines()[0].strip()
    if len(name) > 253 or any(c.isspace() or not c.isprintable() for c in name):
        raise ValueError(f"not a host name: {name[:40]!r}")
    return replace(f, hostname=name or None), m


def parse_os_release(text: str) -> dict[str, str]:
    """KEY=value lines with shell quoting (os-release(5)); bad lines are skipped."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, raw = line.partition("=")
        if not _OS_KEY.fullmatch(key):
            continue
        simple = _OS_SIMPLE.fullmatch(raw)
        if simple:  # the usual case, without shlex (slow, and this runs every round)
            out[key] = next(g for g in simple.groups() if g is not None)
            continue
        try:
            words = shlex.split(raw)
        except ValueError:
            words = [raw.strip("\"'")]
        out[key] = " ".join(words)
    return out


_OS_KEY = re.compile(r"[A-Z0-9_]+")
# A value shlex would return unchanged but for its quotes: bare (no blanks, quotes or shell
# specials), "double-quoted" without specials inside, or 'single-quoted'.
_OS_SIMPLE = re.compile(r"""([^\s"'\\$`]*)|"([^"\\$`]*)"|'([^']*)'""")


def _os_release(text: str, f: Facts, m: Metrics) -> tuple[Facts, Metrics]:
    osr = parse_os_release(text)
    if not osr:
        raise ValueError("no KEY=value lines")
    return (
        replace(
            f,
            os_id=osr.get("ID") or None,
            os_version=osr.get("VERSION_ID") or None,
            os_name=osr.get("PRETTY_NAME") or osr.get("NAME") or None,
        ),
        m,
    )


def _uname(text: str, f: Facts, m: Metrics) -> tuple[Facts, Metrics]:
    words = text.split()
    if len(words) != 3:
        raise ValueError(f"expected 'system release machine', got {len(words)} words")
    return replace(f, kernel=words[1], arch=words[2]), m


def _nproc(text: str, f: Facts, m: Metrics) -> tuple[Facts, Metrics]:
    n = int(text.split()[0])
    if n < 1:
        raise ValueError(f"CPU count {n}")
    return replace(f, cpu_count=n), m


def parse_cpu_line(line: str) -> CpuTimes:
    """`cpu  user nice system idle iowait irq softirq steal guest guest_nice` (jiffies)."""
    words = line.split()
    if not words or words[0] != "cpu" or len(words) < 5:
        raise ValueError("not a /proc/stat cpu line")
    nums = [int(w) for w in words[1:9]]  # guest time is already counted in user/nice
    if any(n < 0 for n in nums):
        raise ValueError("negative counter")
    idle = nums[3] + (nums[4] if len(nums) > 4 else 0)
    return CpuTimes(total=sum(nums), idle=idle)


def cpu_usage(before: CpuTimes, after: CpuTimes) -> float | None:
    """Percent of CPU time not idle between two samples; None if they cannot be compared."""
    total = after.total - before.total
    idle = after.idle - before.idle
    if total <= 0 or idle < 0 or idle > total:
        return None  # counters reset (reboot) or no time passed
    return round(100.0 * (total - idle) / total, 2)


def _cpu(text: str, f: Facts, m: Metrics) -> tuple[Facts, Metrics]:
    samples = [parse_cpu_line(line) for line in text.splitlines() if line.startswith("cpu ")]
    if not samples:
        raise ValueError("no cpu line")
    usage = cpu_usage(samples[0], samples[-1]) if len(samples) >= 2 else None
    return f, replace(m, cpu_times=samples[-1], cpu_percent=usage)


def _loadavg(text: str, f: Facts, m: Metrics) -> tuple[Facts, Metrics]:
    w = text.split()
    loads = [float(x) for x in w[:3]]
    if len(loads) < 3 or not all(math.isfinite(x) and x >= 0 for x in loads):
        raise ValueError("expected three load averages")
    return f, replace(m, load1=loads[0], load5=loads[1], load15=loads[2])


def parse_meminfo(text: str) -> dict[str, int]:
    """`Key:   123 kB` lines into bytes (values without a unit are counts, kept as is)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        words = rest.split()
        if not sep or not words or not words[0].isdigit():
            continue
        scale = 1024 if len(words) > 1 and words[1] == "kB" else 1
        out[key.strip()] = int(words[0]) * scale
    return out


def _meminfo(text: str, f: Facts, m: Metrics) -> tuple[Facts, Metrics]:
    mi = parse_meminfo(text)
    total = mi.get("MemTotal")
    if total is None:
        raise ValueError("no MemTotal")
    available = mi.get("MemAvailable")
    if available is None:  # kernels before 3.14
        available = sum(mi.get(k, 0) for k in ("MemFree", "Buffers", "Cached"))
    return f, replace(
        m,
        mem_total=total,
        mem_available=min(available, total),
        swap_total=mi.get("SwapTotal"),
        swap_free=mi.get("SwapFree"),
    )


def _uptime(text: str, f: Facts, m: Metrics) -> tuple[Facts, Metrics]:
    up = float(text.split()[0])
    if not math.isfinite(up) or up < 0:
        raise ValueError(f"uptime {up}")
    return f, replace(m, uptime=up)


# Filesystems that hold no user data; overlay stays (it is / in containers).
PSEUDO_FS = frozenset(
    """tmpfs devtmpfs devfs proc sysfs cgroup cgroup2 devpts mqueue hugetlbfs debugfs tracefs
    securityfs pstore bpf configfs fusectl nsfs ramfs autofs efivarfs binfmt_misc squashfs
    rpc_pipefs nfsd selinuxfs fuse.lxcfs fuse.gvfsd-fuse fuse.portal fuse.snapfuse none""".split()
)
_DF_LINE = re.compile(r"^(.+?)\s+(\S+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(?:\d+%|-)\s+(/.*)$")


def parse_df(text: str) -> list[Disk]:
    """`df -P -T -B1` into disks: pseudo filesystems and empty ones dropped, and each device
    listed once (at its shortest mount point, so bind mounts do not count twice)."""
    by_device: dict[str, Disk] = {}
    for line in text.splitlines()[1:]:
        mt = _DF_LINE.match(line.rstrip())
        if not mt:
            continue
        device, fstype, total, used, avail, mount = mt.groups()
        if fstype in PSEUDO_FS or int(total) == 0:
            continue
        disk = Disk(mount, device, fstype, int(total), int(used), int(avail))
        known = by_device.get(device)
        if known is None or len(mount) < len(known.mount):
            by_device[device] = disk
    return sorted(by_device.values(), key=lambda d: d.mount)


def _df(text: str, f: Facts, m: Metrics) -> tuple[Facts, Metrics]:
    return f, replace(m, disks=tuple(parse_df(text)))


def _bash(text: str, f: Facts, m: Metrics) -> tuple[Facts, Metrics]:
    version = text.strip().splitlines()[0].strip()
    if not version:
        raise ValueError("empty")
    return replace(f, bash=version[:64]), m


def _systemd_version(text: str, f: Facts, m: Metrics) -> tuple[Facts, Metrics]:
    # `systemctl --version`'s first line: "systemd 252 (252.19-1~deb12u1)"
    words = text.split()
    if len(words) < 2 or words[0] != "systemd":
        raise ValueError(f"not a systemctl --version line: {text[:40]!r}")
    return replace(f, systemd_version=words[1][:32]), m


KUNAME = r"""kuname() {
  local s r m
  { read -r s </proc/sys/kernel/ostype && read -r r </proc/sys/kernel/osrelease; } 2>/dev/null \
    || { kp uname uname -srm; return; }
  { read -r m </proc/sys/kernel/arch; } 2>/dev/null || m=$(uname -m)
  printf '@@kernel-probe uname@@\n%s %s %s\n\n@@kernel-probe-rc uname 0@@\n' "$s" "$r" "$m"
}
"""
KNPROC = r"""knproc() {
  local line r n=0 IFS=,; local -a l
  { mapfile -t l </proc/self/status; } 2>/dev/null
  for line in "${l[@]}"; do
    case $line in Cpus_allowed_list:*) line=${line#*:}; break ;; *) line= ;; esac
  done
  for r in ${line//[[:space:]]/}; do
    case $r in
      *[!0-9-]* | '' | -* | *- | *-*-*) n=0; break ;;
      *-*) n=$((n + 10#${r#*-} - 10#${r%-*} + 1)) ;;
      *) n=$((n + 1)) ;;
    esac
  done
  if ((n > 0)); then
    printf '@@kernel-probe nproc@@\n%s\n\n@@kernel-probe-rc nproc 0@@\n' "$n"
  else
    kp nproc nproc
  fi
}
"""
# {cpu_window} is filled by probe_script: empty, or a second sample after a sleep.
KCPU = r"""kcpu() {
  local a b
  printf '@@kernel-probe cpu@@\n'
  if { read -r a </proc/stat; } 2>/dev/null; then
    printf '%s\n' "$a"
{cpu_window}    printf '\n@@kernel-probe-rc cpu 0@@\n'
  else
    printf '\n@@kernel-probe-rc cpu 1@@\n@@kernel-probe-stderr cpu@@\ncannot read /proc/stat\n'
  fi
}
"""
DF_EXCLUDE = " ".join(f"-x {t}" for t in sorted(PSEUDO_FS - {"none"}))

SECTIONS: tuple[Section, ...] = (
    Section("hostname", "kr hostname 0 /proc/sys/kernel/hostname", _hostname),
    Section("os-release", "kr os-release 0 /etc/os-release /usr/lib/os-release", _os_release,
            check=True),
    Section("uname", "kuname", _uname, helper=KUNAME, check=True),
    Section("nproc", "knproc", _nproc, helper=KNPROC),
    Section("cpu", "kcpu", _cpu, helper=KCPU),
    Section("loadavg", "kr loadavg 0 /proc/loadavg", _loadavg),
    Section("meminfo", "kr meminfo 0 /proc/meminfo", _meminfo),
    Section("uptime", "kr uptime 0 /proc/uptime", _uptime),
    Section("df", f"kp df df -l -P -T -B1 {DF_EXCLUDE}", _df, check=True),
    # Only when a server joins: what bash and systemd it has.
    Section("bash", "printf '@@kernel-probe bash@@\\n%s\\n\\n@@kernel-probe-rc bash 0@@\\n' "
            '"$BASH_VERSION"', _bash, probe=False, check=True),
    Section("systemd-version", "kp systemd-version systemctl --version", _systemd_version,
            probe=False, check=True),
)  # fmt: skip
PROBE = tuple(s for s in SECTIONS if s.probe)
CHECK = tuple(s for s in SECTIONS if s.check)

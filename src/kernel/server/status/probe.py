"""The status probe: one bash script per host per interval, and pure functions around it.

- `probe_script(units)` builds the script (a `RemoteCommand`); its output is a sequence of
  sections, each opened by `@@kernel-probe <name>@@` and closed by
  `@@kernel-probe-rc <name> <exit code>@@`, then optionally `@@kernel-probe-stderr <name>@@`
  and that command's stderr; `@@kernel-probe-end@@` closes the whole output.
- `parse_probe(output)` turns that text into a `ProbeReport` (facts, one metrics sample,
  unit states, warnings). It never raises: what it cannot read becomes a warning.

What the poller does with a report lives beside it: `history.py` (the numbers kept and their
retention), `health.py` (online/offline, and where a unit runs).

The format is documented in docs/status.md; tests/data/probe/ holds recorded outputs.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from kernel.server.core import shell
from kernel.server.core.shell import RemoteCommand

PROBE_VERSION = 1
UNIT_PROPERTIES = ("Id", "Names", "LoadState", "ActiveState", "SubState", "UnitFileState")

# Every step costs host CPU on every host every interval, so the script forks as little as
# it can: /proc and /etc files are read by bash itself (`mapfile`, `read`; `$(<f)` would
# still fork in bash 5.2), and only df and systemctl run as processes. The output is the
# same format as ever (see docs/status.md): `kr` prints what `kp cat FILE` used to.
_SCRIPT_HEAD = r"""export LC_ALL=C
exec 3>&1
kp() {
  local name=$1 err rc; shift
  printf '@@kernel-probe %s@@\n' "$name"
  err=$("$@" 2>&1 >&3); rc=$?
  printf '\n@@kernel-probe-rc %s %s@@\n' "$name" "$rc"
  if [ -n "$err" ]; then printf '@@kernel-probe-stderr %s@@\n%s\n' "$name" "$err"; fi
  return 0
}
kr() {
  local name=$1 n=$2 f; local -a l; shift 2
  printf '@@kernel-probe %s@@\n' "$name"
  for f; do
    if { mapfile -t -n "$n" l <"$f"; } 2>/dev/null; then
      ((${#l[@]})) && printf '%s\n' "${l[@]}"
      printf '\n@@kernel-probe-rc %s 0@@\n' "$name"; return 0
    fi
  done
  printf '\n@@kernel-probe-rc %s 1@@\n@@kernel-probe-stderr %s@@\ncannot read %s\n' \
    "$name" "$name" "$*"
}
kuname() {
  local s r m
  { read -r s </proc/sys/kernel/ostype && read -r r </proc/sys/kernel/osrelease; } 2>/dev/null \
    || { kp uname uname -srm; return; }
  { read -r m </proc/sys/kernel/arch; } 2>/dev/null || m=$(uname -m)
  printf '@@kernel-probe uname@@\n%s %s %s\n\n@@kernel-probe-rc uname 0@@\n' "$s" "$r" "$m"
}
knproc() {
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
kcpu() {
  local a b
  printf '@@kernel-probe cpu@@\n'
  if { read -r a </proc/stat; } 2>/dev/null; then
    printf '%s\n' "$a"
{cpu_window}    printf '\n@@kernel-probe-rc cpu 0@@\n'
  else
    printf '\n@@kernel-probe-rc cpu 1@@\n@@kernel-probe-stderr cpu@@\ncannot read /proc/stat\n'
  fi
}
printf '@@kernel-probe version@@\n{version}\n\n@@kernel-probe-rc version 0@@\n'
kr hostname 0 /proc/sys/kernel/hostname
kr os-release 0 /etc/os-release /usr/lib/os-release
kuname
knproc
kcpu
kr loadavg 0 /proc/loadavg
kr meminfo 0 /proc/meminfo
kr uptime 0 /proc/uptime
kp df df -l -P -T -B1 {df_exclude}
"""

# When PID 1 is not systemd, `systemctl is-system-running` says "offline" (exit 1) and
# `systemctl show` fails: say so without starting systemctl (the same sd_booted() test).
_SYSTEMD_OFFLINE = r"""if [ ! -d /run/systemd/system ] && command -v systemctl >/dev/null; then
  printf '@@kernel-probe systemd@@\noffline\n\n@@kernel-probe-rc systemd 1@@\n'
{offline_units}else
  kp systemd timeout 10 systemctl is-system-running
{units}fi
"""


def probe_script(units: Iterable[str], *, cpu_window: float = 0.0) -> RemoteCommand:
    """The probe for one host, asking for the state of `units` (catalogue units).

    The `cpu` section is one /proc/stat line: the poller gets CPU usage over its interval
    from two probes' counters (`cpu_usage`), so a probe on its own has no usage figure.
    `cpu_window` > 0 samples twice that many seconds apart (a `sleep`, ~1 ms of CPU and the
    window's wall time) for a caller that probes once and wants `cpu_percent` anyway."""
    names = sorted({shell.unit_name(u) for u in units})
    window = ""
    if cpu_window != 0:
        if not 0.001 <= cpu_window <= 10:  # also refuses NaN
            raise ValueError("cpu_window must be 0, or 0.001 to 10 seconds")
        window = f"    sleep {cpu_window:.3f}; read -r b </proc/stat && printf '%s\\n' \"$b\"\n"
    df_exclude = " ".join(f"-x {t}" for t in sorted(PSEUDO_FS - {"none"}))
    head = (
        _SCRIPT_HEAD.replace("{version}", str(PROBE_VERSION))
        .replace("{cpu_window}", window)
        .replace("{df_exclude}", df_exclude)
    )
    offline = online = ""
    if names:  # `systemctl show` with no unit would describe PID 1 itself
        requested = (
            "printf '@@kernel-probe units-requested@@\\n'\n"
            f"printf '%s\\n' {shell.join(names)}\n"
            "printf '\\n@@kernel-probe-rc units-requested 0@@\\n'\n"
        )
        show = f"kp units timeout 20 {shell.systemctl_show(names, UNIT_PROPERTIES)}\n"
        offline = (
            requested + "printf '@@kernel-probe units@@\\n\\n@@kernel-probe-rc units 1@@\\n'\n"
        )
        online = requested + show
    systemd = _SYSTEMD_OFFLINE.replace("{offline_units}", offline).replace("{units}", online)
    end = "printf '@@kernel-probe-end@@\\n'\n"
    return RemoteCommand(cmd=head + systemd + end, timeout=60.0, title="status probe")


# --- the report ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Facts:
    hostname: str | None = None
    os_id: str | None = None  # "debian"
    os_version: str | None = None  # "12"
    os_name: str | None = None  # "Debian GNU/Linux 12 (bookworm)"
    kernel: str | None = None  # "6.1.0-18-amd64"
    arch: str | None = None  # "x86_64"
    cpu_count: int | None = None
    systemd: str | None = None  # is-system-running: running, degraded, offline, …


@dataclass(frozen=True)
class CpuTimes:
    """Aggregate jiffies from /proc/stat; two of them give CPU usage between them."""

    total: int
    idle: int  # idle + iowait


@dataclass(frozen=True)
class Disk:
    mount: str
    device: str
    fstype: str
    total: int  # bytes
    used: int
    available: int


@dataclass(frozen=True)
class Metrics:
    cpu_percent: float | None = None  # only with probe_script(cpu_window=…); else None
    cpu_times: CpuTimes | None = None  # for usage over the whole poll interval
    load1: float | None = None
    load5: float | None = None
    load15: float | None = None
    mem_total: int | None = None  # bytes
    mem_available: int | None = None
    swap_total: int | None = None
    swap_free: int | None = None
    uptime: float | None = None  # seconds
    disks: tuple[Disk, ...] = ()

    @property
    def mem_used(self) -> int | None:
        if self.mem_total is None or self.mem_available is None:
            return None
        return max(0, self.mem_total - self.mem_available)

    @property
    def swap_used(self) -> int | None:
        if self.swap_total is None or self.swap_free is None:
            return None
        return max(0, self.swap_total - self.swap_free)


@dataclass(frozen=True)
class UnitState:
    unit: str  # as asked for, e.g. "sums.service"
    load_state: str = ""  # loaded, not-found, masked, bad-setting, error
    active_state: str = ""  # active, inactive, failed, activating, deactivating, reloading
    sub_state: str = ""  # running, dead, exited, …
    unit_file_state: str = ""  # enabled, disabled, static, masked, "" when no file

    @property
    def installed(self) -> bool:
        return self.load_state not in ("", "not-found")

    @property
    def active(self) -> bool:
        return self.active_state == "active"

    @property
    def failed(self) -> bool:
        return self.active_state == "failed"


@dataclass(frozen=True)
class ProbeReport:
    facts: Facts = field(default_factory=Facts)
    metrics: Metrics = field(default_factory=Metrics)
    units: dict[str, UnitState] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    complete: bool = False  # the end marker was seen


def report_json(report: ProbeReport) -> dict[str, Any]:
    """The report as JSON-ready dicts, with the derived values (mem_used, swap_used, and each
    unit's installed/active/failed) spelled out — for storage and the API. (Written out by
    hand, not `dataclasses.asdict`: this runs for every host in every round.)"""
    m = report.metrics
    times = m.cpu_times
    return {
        "facts": dict(report.facts.__dict__),
        "metrics": {
            "cpu_percent": m.cpu_percent,
            "cpu_times": None if times is None else {"total": times.total, "idle": times.idle},
            "load1": m.load1,
            "load5": m.load5,
            "load15": m.load15,
            "mem_total": m.mem_total,
            "mem_available": m.mem_available,
            "swap_total": m.swap_total,
            "swap_free": m.swap_free,
            "uptime": m.uptime,
            "disks": [dict(d.__dict__) for d in m.disks],
            "mem_used": m.mem_used,
            "swap_used": m.swap_used,
        },
        "units": {
            name: {
                **st.__dict__,
                "installed": st.installed,
                "active": st.active,
                "failed": st.failed,
            }
            for name, st in report.units.items()
        },
        "warnings": list(report.warnings),
        "complete": report.complete,
    }


# --- parsing -------------------------------------------------------------------------------

_MARK = re.compile(r"^@@kernel-probe(-rc|-stderr|-end)?(?: ([A-Za-z0-9_.-]+))?(?: (-?\d+))?@@$")


@dataclass
class _Section:
    chunks: list[str] = field(default_factory=list)  # the section's text, as found
    rc: int | None = None
    errors: list[str] = field(default_factory=list)  # its stderr text

    @property
    def text(self) -> str:
        return "".join(self.chunks).strip("\n")

    @property
    def lines(self) -> list[str]:
        return self.text.split("\n") if self.chunks else []

    def why(self) -> str:
        """A one-line reason for a failed section, for warnings."""
        lines = "".join(self.errors).split("\n")
        err = next((x.strip() for x in lines if x.strip()), "")
        code = f"exit {self.rc}" if self.rc is not None else "no exit code"
        return f"{code}: {err}" if err else code


_MARK_LINE = re.compile(r"^@@kernel-probe.*$", re.M)
_CR_AT_EOL = re.compile(r"\r+(?=\n|\Z)")


def _split(text: str) -> tuple[dict[str, _Section], bool, list[str]]:
    # Marker lines are found with one regex over the text and the text between them is
    # sliced, not walked line by line: this runs for every host in every round.
    if "\r" in text:
        text = _CR_AT_EOL.sub("", text)
    sections: dict[str, _Section] = {}
    warnings: list[str] = []
    current: list[str] | None = None
    complete = False
    stray = 0
    pos = 0

    def take(chunk: str) -> None:
        nonlocal stray
        if current is not None:
            current.append(chunk)
        else:
            stray += sum(1 for x in chunk.split("\n") if x.strip())

    for found in _MARK_LINE.finditer(text):
        m = _MARK.match(found.group(0))
        if m is None:  # looks like a marker but is not: plain text of the section
            continue
        take(text[pos : found.start()])
        pos = found.end() + 1
        kind, name, num = m.group(1), m.group(2), m.group(3)
        if kind == "-end":
            complete = True
            current = None
        elif name is None:
            current = None
        elif kind is None:
            current = sections.setdefault(name, _Section()).chunks
        elif kind == "-rc":
            sections.setdefault(name, _Section()).rc = int(num) if num else None
            current = None
        else:
            current = sections.setdefault(name, _Section()).errors
    take(text[pos:])
    if stray:
        warnings.append(f"{stray} line(s) outside any section ignored")
    return sections, complete, warnings


def parse_probe(output: str | bytes) -> ProbeReport:
    """Read the probe's stdout into a report. Never raises; problems become warnings."""
    try:
        return _parse(output)
    except Exception as e:  # noqa: BLE001 - a parser bug must not stop the poller
        return ProbeReport(warnings=(f"probe output could not be parsed: {e!r}",))


def _parse(output: str | bytes) -> ProbeReport:
    if isinstance(output, bytes):
        output = output.decode("utf-8", "replace")
    sections, complete, warnings = _split(output)
    if not sections:
        return ProbeReport(warnings=("no probe sections in the output", *warnings))
    if not complete:
        warnings.append("probe output ends early (no end marker)")

    def get(name: str) -> _Section | None:
        s = sections.get(name)
        if s is None:
            warnings.append(f"{name}: section missing")
            return None
        if s.rc not in (0, None) or not s.text:
            warnings.append(f"{name}: {s.why()}" if s.rc else f"{name}: empty")
        return s if s.text else None

    version = get("version")
    if version is not None and version.text.strip() != str(PROBE_VERSION):
        warnings.append(f"version: expected {PROBE_VERSION}, got {version.text.strip()[:20]!r}")

    facts = Facts()
    metrics = Metrics()
    for name, apply in _FACT_PARSERS:
        sec = get(name)
        if sec is None:
            continue
        try:
            facts, metrics = apply(sec.text, facts, metrics)
        except (ValueError, IndexError, KeyError, ZeroDivisionError) as e:
            warnings.append(f"{name}: cannot read ({e})")

    facts = _systemd(sections, facts, warnings)
    units = _units(sections, warnings)
    return ProbeReport(
        facts=facts,
        metrics=metrics,
        units=units,
        warnings=tuple(warnings),
        complete=complete,
    )


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


def _systemd(sections: dict[str, _Section], f: Facts, warnings: list[str]) -> Facts:
    # is-system-running exits non-zero for "degraded" and "offline": that is its answer, so
    # only an empty answer is worth a warning.
    sec = sections.get("systemd")
    words = sec.text.split() if sec is not None else []
    if not words:
        warnings.append("systemd: no answer" + (f" ({sec.why()})" if sec is not None else ""))
        return f
    return replace(f, systemd=words[0][:32])


_FACT_PARSERS = (
    ("hostname", _hostname),
    ("os-release", _os_release),
    ("uname", _uname),
    ("nproc", _nproc),
    ("cpu", _cpu),
    ("loadavg", _loadavg),
    ("meminfo", _meminfo),
    ("uptime", _uptime),
    ("df", _df),
)


def parse_systemctl_show(text: str) -> list[dict[str, str]]:
    """Blocks of `Key=value` lines separated by blank lines, one per unit, in order."""
    blocks: list[dict[str, str]] = []
    cur: dict[str, str] = {}
    for line in text.split("\n"):
        if not line.strip():
            if cur:
                blocks.append(cur)
                cur = {}
            continue
        key, sep, value = line.partition("=")
        if sep and re.fullmatch(r"[A-Za-z]+", key):
            cur[key] = value.strip()
    if cur:
        blocks.append(cur)
    return blocks


def _units(sections: dict[str, _Section], warnings: list[str]) -> dict[str, UnitState]:
    req = sections.get("units-requested")
    if req is None:
        return {}
    wanted = [w.strip() for w in req.lines if w.strip()]
    sec = sections.get("units")
    if sec is None:
        warnings.append("units: section missing")
        return {}
    # `systemd` section state "offline" means PID 1 is not systemd: say so once, plainly.
    systemd = sections.get("systemd")
    if systemd is not None and systemd.text.strip().startswith("offline"):
        warnings.append("units: systemd is not running on this host")
        return {}
    blocks = parse_systemctl_show(sec.text)
    if sec.rc not in (0, None) or not blocks:
        warnings.append(f"units: {sec.why()}")
        if not blocks:
            return {}
    by_name: dict[str, dict[str, str]] = {}
    for b in blocks:
        for n in [*b.get("Names", "").split(), b.get("Id", "")]:
            if n:
                by_name.setdefault(n, b)
    positional = len(blocks) == len(wanted)
    out: dict[str, UnitState] = {}
    for i, unit in enumerate(wanted):
        found = by_name.get(unit) or (blocks[i] if positional else None)
        if found is None:
            warnings.append(f"units: no state for {unit}")
            continue
        out[unit] = UnitState(
            unit=unit,
            load_state=found.get("LoadState", ""),
            active_state=found.get("ActiveState", ""),
            sub_state=found.get("SubState", ""),
            unit_file_state=found.get("UnitFileState", ""),
        )
    return out

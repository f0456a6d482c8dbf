"""The status probe: one bash script per host per interval, built from the section table
(sections.py), and the parser of its output.

- `probe_script(units)` builds the script (a `RemoteCommand`); its output is a sequence of
  sections, each opened by `@@kernel-probe <name>@@` and closed by
  `@@kernel-probe-rc <name> <exit code>@@`, then optionally `@@kernel-probe-stderr <name>@@`
  and that command's stderr; `@@kernel-probe-end@@` closes the whole output.
- `parse_probe(output)` turns that text into a `ProbeReport` (report.py: facts, one metrics
  sample, unit states, warnings), each section by its own parser. It never raises: what it
  cannot read becomes a warning.

The systemd state and the catalogue units' states are read here (they need the units asked
for). What the poller does with a report lives beside it: `history.py` (the numbers kept
and their retention), `health.py` (online/offline, and where a unit runs). The format is
documented in docs/status.md; tests/data/probe/ holds recorded outputs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from kernel.server.core import shell
from kernel.server.core.shell import RemoteCommand
from kernel.server.status.report import Facts, Metrics, ProbeReport, UnitState
from kernel.server.status.sections import CHECK, PROBE, Section

PROBE_VERSION = 1
UNIT_PROPERTIES = ("Id", "Names", "LoadState", "ActiveState", "SubState", "UnitFileState")

_HELPERS = r"""export LC_ALL=C
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
"""

# When PID 1 is not systemd, `systemctl is-system-running` says "offline" (exit 1) and
# `systemctl show` fails: say so without starting systemctl (the same sd_booted() test).
_SYSTEMD_OFFLINE = r"""if [ ! -d /run/systemd/system ] && command -v systemctl >/dev/null; then
  printf '@@kernel-probe systemd@@\noffline\n\n@@kernel-probe-rc systemd 1@@\n'
{offline_units}else
  kp systemd timeout 10 systemctl is-system-running
{units}fi
"""


def script(
    sections: Sequence[Section], units: Iterable[str] = (), *, cpu_window: float = 0.0
) -> str:
    """The bash that prints ``sections`` (in order), then the systemd state and ``units``."""
    names = sorted({shell.unit_name(u) for u in units})
    window = ""
    if cpu_window != 0:
        if not 0.001 <= cpu_window <= 10:  # also refuses NaN
            raise ValueError("cpu_window must be 0, or 0.001 to 10 seconds")
        window = f"    sleep {cpu_window:.3f}; read -r b </proc/stat && printf '%s\\n' \"$b\"\n"
    helpers = "".join(s.helper for s in sections).replace("{cpu_window}", window)
    version = (
        f"printf '@@kernel-probe version@@\\n{PROBE_VERSION}\\n\\n"
        "@@kernel-probe-rc version 0@@\\n'\n"
    )
    body = "".join(s.bash + "\n" for s in sections)
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
    return _HELPERS + helpers + version + body + systemd + end


def probe_script(units: Iterable[str], *, cpu_window: float = 0.0) -> RemoteCommand:
    """The status probe for one host, asking for the state of `units` (catalogue units).

    The `cpu` section is one /proc/stat line: the poller gets CPU usage over its interval
    from two probes' counters (`cpu_usage`), so a probe on its own has no usage figure.
    `cpu_window` > 0 samples twice that many seconds apart (a `sleep`, ~1 ms of CPU and the
    window's wall time) for a caller that probes once and wants `cpu_percent` anyway."""
    cmd = script(PROBE, units, cpu_window=cpu_window)
    return RemoteCommand(cmd=cmd, timeout=60.0, title="status probe")


def check_script() -> RemoteCommand:
    """The environment check a joining server gets: the sections marked ``check``."""
    return RemoteCommand(cmd=script(CHECK), timeout=60.0, title="environment check")


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


def parse_probe(output: str | bytes, sections: Sequence[Section] = PROBE) -> ProbeReport:
    """Read the stdout of a script of ``sections`` into a report. Never raises; problems
    become warnings."""
    try:
        return _parse(output, sections)
    except Exception as e:  # noqa: BLE001 - a parser bug must not stop the poller
        return ProbeReport(warnings=(f"probe output could not be parsed: {e!r}",))


def _parse(output: str | bytes, expected: Sequence[Section]) -> ProbeReport:
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
    for section in expected:
        sec = get(section.name)
        if sec is None:
            continue
        try:
            facts, metrics = section.parse(sec.text, facts, metrics)
        except (ValueError, IndexError, KeyError, ZeroDivisionError) as e:
            warnings.append(f"{section.name}: cannot read ({e})")

    facts = _systemd(sections, facts, warnings)
    units = _units(sections, warnings)
    return ProbeReport(
        facts=facts,
        metrics=metrics,
        units=units,
        warnings=tuple(warnings),
        complete=complete,
    )


def _systemd(sections: dict[str, _Section], f: Facts, warnings: list[str]) -> Facts:
    # is-system-running exits non-zero for "degraded" and "offline": that is its answer, so
    # only an empty answer is worth a warning.
    sec = sections.get("systemd")
    words = sec.text.split() if sec is not None else []
    if not words:
        warnings.append("systemd: no answer" + (f" ({sec.why()})" if sec is not None else ""))
        return f
    return replace(f, systemd=words[0][:32])


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

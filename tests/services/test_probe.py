"""probe.py: the probe script, its parser on recorded outputs, retention and health."""

import base64
import dataclasses
import json
import math
import os
import socket
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel.exceptions import InvalidName
from kernel.server.status import health, history, probe, sections
from kernel.server.status.health import HostHealth, next_health
from kernel.server.status.history import MetricPoint, RetentionPolicy, compact
from kernel.server.status.probe import parse_probe, probe_script
from kernel.server.status.report import (
    CpuTimes,
    Facts,
    Metrics,
    ProbeReport,
    UnitState,
    report_json,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "probe"
CASES = sorted(DATA.glob("*.json"))


def as_json(report):
    return json.loads(json.dumps(dataclasses.asdict(report)))


def test_there_are_cases():
    assert len(CASES) >= 10


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_recorded_case(path):
    case = json.loads(path.read_text())
    # Whole outputs test the splitting and the report; each section's own parser has its
    # cases below, so a change to the script re-records nothing (`command` is provenance).
    output = base64.b64decode(case["output_base64"]) if "output_base64" in case else case["output"]
    assert as_json(parse_probe(output)) == case["expected"]


SECTION_CASES = sorted((DATA / "sections").glob("*.json"))


def test_every_section_has_cases():
    assert {p.stem for p in SECTION_CASES} == {s.name for s in sections.SECTIONS}


@pytest.mark.parametrize("path", SECTION_CASES, ids=[p.stem for p in SECTION_CASES])
def test_section_cases(path):
    recorded = json.loads(path.read_text())
    (section,) = [s for s in sections.SECTIONS if s.name == recorded["section"]]
    for case in recorded["cases"]:
        try:
            f, m = section.parse(case["text"], Facts(), Metrics())
        except (ValueError, IndexError, KeyError, ZeroDivisionError) as e:
            assert case["expected"] == {"error": type(e).__name__}, case["description"]
            continue
        got = {f"facts.{k}": v for k, v in dataclasses.asdict(f).items() if v is not None}
        got |= {f"metrics.{k}": v for k, v in dataclasses.asdict(m).items() if v not in (None, ())}
        assert json.loads(json.dumps(got)) == case["expected"], case["description"]


def test_the_scripts_are_the_section_table():
    probe_cmd, check_cmd = probe_script([]).cmd, probe.check_script().cmd
    for s in sections.SECTIONS:
        assert (f"\n{s.bash}\n" in probe_cmd) == s.probe, s.name
        assert (f"\n{s.bash}\n" in check_cmd) == s.check, s.name
        if s.helper:
            assert s.helper.split("(")[0] + "()" in (probe_cmd if s.probe else check_cmd)


def test_the_check_script_runs_here_for_real():
    from kernel.server.inventory.envcheck import parse_check

    r = subprocess.run(["bash", "-c", probe.check_script().cmd], capture_output=True, text=True)
    facts = parse_check(r.stdout)
    assert facts["bash"] and facts["kernel"] == os.uname().release
    assert facts["disk_total_kb"] and facts["os"]


def test_the_script_runs_here_for_real():
    cmd = probe_script(["kernel-test-none"])
    r = subprocess.run(["bash", "-c", cmd.cmd], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    report = parse_probe(r.stdout)
    assert report.complete
    assert report.facts.hostname == socket.gethostname()
    assert report.facts.cpu_count == len(os.sched_getaffinity(0))
    assert report.facts.kernel == os.uname().release
    assert report.metrics.mem_total and report.metrics.mem_total > 0
    assert report.metrics.uptime and report.metrics.uptime > 0
    assert report.metrics.disks and any(d.mount == "/" for d in report.metrics.disks)
    assert all(d.fstype not in sections.PSEUDO_FS for d in report.metrics.disks)
    assert report.metrics.cpu_times is not None
    assert report.metrics.cpu_percent is None  # one sample: the poller computes usage
    assert report.facts.systemd  # "offline" here (no systemd), whatever a host says
    if not os.path.isdir("/run/systemd/system"):
        assert report.facts.systemd == "offline"
        assert report.warnings == ("units: systemd is not running on this host",)


def test_the_script_counts_cpus_like_nproc():
    # nproc's count comes from bash's own /proc/self/status (no process): check it against
    # the real nproc under a narrower affinity.
    cmd = probe_script([]).cmd
    for cpus in ("0", f"0-{os.cpu_count() - 1}"):
        argv = ["taskset", "-c", cpus, "bash", "-c", cmd]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
        real = subprocess.run(["taskset", "-c", cpus, "nproc"], capture_output=True, text=True)
        assert parse_probe(r.stdout).facts.cpu_count == int(real.stdout)


def test_cpu_window_gives_usage_on_its_own():
    cmd = probe_script([], cpu_window=0.05).cmd
    r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=60)
    report = parse_probe(r.stdout)
    assert report.complete and report.warnings == ()
    assert report.metrics.cpu_percent is not None and 0 <= report.metrics.cpu_percent <= 100
    for bad in (11, -1, float("nan")):
        with pytest.raises(ValueError):
            probe_script([], cpu_window=bad)


def test_script_shape():
    cmd = probe_script(["b", "a.timer", "b.service"])
    assert cmd.title == "status probe" and cmd.stdin is None
    assert "kp units timeout 20 systemctl show -p Id,Names,LoadState,ActiveState," in cmd.cmd
    assert "-- a.timer b.service\n" in cmd.cmd
    assert "systemctl show" not in probe_script([]).cmd  # would describe PID 1
    # Cheap on the host: files are read by bash itself, df runs once and skips pseudo
    # filesystems, nothing waits.
    assert "sleep" not in cmd.cmd and "cat " not in cmd.cmd and "grep" not in cmd.cmd
    assert cmd.cmd.count("df -l -P -T -B1 -x ") == 1 and "-x tmpfs" in cmd.cmd
    assert "timeout 10 df" not in cmd.cmd  # `-l` keeps network filesystems out instead
    with pytest.raises(InvalidName):
        probe_script(["x; reboot"])


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.binary()))
def test_parse_never_raises(output):
    report = parse_probe(output)
    assert isinstance(report, ProbeReport)


_markers = st.sampled_from(
    [
        "@@kernel-probe hostname@@",
        "@@kernel-probe cpu@@",
        "@@kernel-probe units-requested@@",
        "@@kernel-probe units@@",
        "@@kernel-probe-rc units 1@@",
        "@@kernel-probe-stderr units@@",
        "@@kernel-probe-end@@",
        "@@kernel-probe-rc df 99999999999999999999@@",
        "cpu  1 2 3 4 5",
        "Id=a.service",
        "Names=",
        "",
        "LoadState=loaded",
        "a.service",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_markers, st.text(max_size=20)), max_size=40))
def test_parse_never_raises_on_near_misses(lines):
    parse_probe("\n".join(lines))


# --- small parsers --------------------------------------------------------------------------


def test_os_release_quoting():
    text = 'NAME="Debian GNU/Linux"\nID=debian\n# comment\nbad line\nX=\'a b\'\nY="unterminated\n'
    assert sections.parse_os_release(text) == {
        "NAME": "Debian GNU/Linux",
        "ID": "debian",
        "X": "a b",
        "Y": "unterminated",
    }


def test_cpu_usage():
    a = sections.parse_cpu_line("cpu  100 0 100 700 100 0 0 0 0 0")
    b = sections.parse_cpu_line("cpu  150 0 150 750 150 0 0 0 0 0")
    assert a == CpuTimes(total=1000, idle=800)
    assert sections.cpu_usage(a, b) == 50.0
    assert sections.cpu_usage(b, a) is None  # counters went back: a reboot
    assert sections.cpu_usage(a, a) is None
    for bad in ("cpu0 1 2 3 4", "cpu 1 2", "cpu 1 -2 3 4", ""):
        with pytest.raises(ValueError):
            sections.parse_cpu_line(bad)


def test_meminfo_units():
    assert sections.parse_meminfo("MemTotal: 2 kB\nHugePages_Total: 3\nBad\nX: y kB") == {
        "MemTotal": 2048,
        "HugePages_Total": 3,
    }


def test_unit_state_flags():
    assert UnitState("a", "loaded", "active").installed
    assert UnitState("a", "loaded", "active").active
    assert UnitState("a", "masked", "inactive").installed
    assert not UnitState("a", "not-found", "inactive").installed
    assert UnitState("a", "loaded", "failed").failed


def test_metric_values():
    case = json.loads((DATA / "weird-mounts.json").read_text())
    vals = history.metric_values(parse_probe(case["output"]))
    assert vals["disk_total"] == sum(d["total"] for d in case["expected"]["metrics"]["disks"])
    assert vals["mem_used"] == 25276510208 - 24733388800
    assert (
        history.metric_values(parse_probe(case["output"]), cpu_percent=12.5)["cpu_percent"] == 12.5
    )
    assert history.metric_values(parse_probe("")) == {}


# --- retention ------------------------------------------------------------------------------

DAY = 86400.0
NOW = 1_700_000_000.0


def pt(t, **values):
    return MetricPoint(t=t, values=values or {"cpu_percent": 1.0})


def test_compact_keeps_raw_buckets_older_and_drops_oldest():
    points = [
        pt(NOW - 10),  # raw
        pt(NOW - DAY + 1),  # raw, just
        pt(NOW - 2 * DAY - 30, cpu_percent=10.0),  # same 5-minute bucket ...
        pt(NOW - 2 * DAY - 60, cpu_percent=20.0, load1=1.0),  # ... as this one
        pt(NOW - 8 * DAY),  # gone
    ]
    out = compact(points, NOW)
    assert [p.t for p in out][-2:] == [NOW - DAY + 1, NOW - 10]
    (bucket,) = out[:-2]
    assert bucket.t % 300 == 0 and bucket.count == 2
    assert bucket.values == {"cpu_percent": 15.0, "load1": 1.0}


def test_compact_is_idempotent_and_merges_weighted():
    policy = RetentionPolicy(raw_seconds=600, keep_seconds=6000, bucket_seconds=300)
    first = compact([pt(NOW - 1000 + i, cpu_percent=float(i)) for i in range(3)], NOW, policy)
    assert compact(first, NOW, policy) == first
    # Three samples became one point of count 3; a fourth sample joins it with weight 1.
    (b,) = first
    later = compact([*first, pt(b.t + 1, cpu_percent=100.0)], NOW, policy)
    assert later[0].count == 4
    assert later[0].values["cpu_percent"] == pytest.approx((0 + 1 + 2 + 100) / 4)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0, 9 * DAY), st.floats(0, 100)),
        max_size=60,
    )
)
def test_compact_properties(samples):
    points = [pt(NOW - age, cpu_percent=v) for age, v in samples]
    out = compact(points, NOW)
    assert compact(out, NOW) == out
    assert [p.t for p in out] == sorted(p.t for p in out)
    assert all(p.t >= NOW - 7 * DAY for p in out)
    raw_in = {p.t for p in points if p.t >= NOW - DAY}
    assert raw_in <= {p.t for p in out}
    # every sample still inside the horizon is counted exactly once
    horizon = NOW - 7 * DAY
    expected = sum(
        1
        for p in points
        if p.t >= NOW - DAY or (p.t >= horizon and math.floor(p.t / 300) * 300 >= horizon)
    )
    assert sum(p.count for p in out) == expected


def test_downsample():
    pts = [pt(0, a=1.0), pt(299, a=3.0), pt(300, a=10.0, b=2.0), MetricPoint(600, {"a": 4.0}, 3)]
    out = history.downsample(pts, 300)
    assert [(p.t, dict(p.values), p.count) for p in out] == [
        (0, {"a": 2.0}, 2),
        (300, {"a": 10.0, "b": 2.0}, 1),
        (600, {"a": 4.0}, 3),
    ]
    assert history.downsample([], 300) == []


def test_retention_policy_is_checked():
    with pytest.raises(ValueError):
        RetentionPolicy(raw_seconds=10, keep_seconds=5)
    with pytest.raises(ValueError):
        RetentionPolicy(bucket_seconds=0)


# --- health and spread ----------------------------------------------------------------------


def test_health_goes_offline_after_consecutive_failures():
    h = HostHealth()
    h = next_health(h, ok=False, at=1, error="connect refused", offline_after=3)
    assert (h.state, h.failures, h.last_error) == ("unknown", 1, "connect refused")
    h = next_health(h, ok=True, at=2, offline_after=3)
    assert (h.state, h.failures, h.last_ok_at) == ("online", 0, 2)
    h = next_health(h, ok=False, at=3, error="timeout", offline_after=3)
    h = next_health(h, ok=False, at=4, error="timeout", offline_after=3)
    assert h.state == "online" and h.failures == 2
    h = next_health(h, ok=False, at=5, error="no route", offline_after=3)
    assert (h.state, h.failures, h.last_error, h.last_error_at) == ("offline", 3, "no route", 5)
    h = next_health(h, ok=True, at=6, offline_after=3)
    assert (h.state, h.failures, h.last_error) == ("online", 0, "no route")
    assert next_health(HostHealth(), ok=False, at=1, offline_after=1).state == "offline"
    assert next_health(HostHealth(), ok=False, at=1).last_error == "probe failed"
    # the default: offline at the second failure in a row (within two poll intervals)
    h = next_health(HostHealth(state="online"), ok=False, at=1)
    assert h.state == "online"
    assert next_health(h, ok=False, at=2).state == "offline"
    with pytest.raises(ValueError):
        next_health(HostHealth(), ok=True, at=1, offline_after=0)


def test_service_spread():
    states = {
        "b": {"sums.service": UnitState("sums.service", "loaded", "failed")},
        "a": {"sums.service": UnitState("sums.service", "loaded", "active")},
        "c": {"sums.service": UnitState("sums.service", "not-found", "inactive")},
        "d": {},
    }
    s = health.service_spread("sums.service", states)
    assert (s.installed, s.active, s.failed) == (("a", "b"), ("a",), ("b",))


def test_report_json():
    case = json.loads((DATA / "full-host-systemd.json").read_text())
    data = report_json(parse_probe(case["output"]))
    assert json.loads(json.dumps(data)) == data
    assert data["units"]["kp-failed.service"]["failed"] is True
    assert data["units"]["sums.service"]["installed"] is False
    assert (
        data["metrics"]["mem_used"]
        == data["metrics"]["mem_total"] - data["metrics"]["mem_available"]
    )
    assert data["metrics"]["disks"][0]["mount"] == "/"


def _report_json_reference(report):
    """report_json as it was first written (dataclasses.asdict): the hand-written one must
    give exactly this, key order included."""
    data = dataclasses.asdict(report)
    data["metrics"]["mem_used"] = report.metrics.mem_used
    data["metrics"]["swap_used"] = report.metrics.swap_used
    for unit, state in report.units.items():
        data["units"][unit].update(
            installed=state.installed, active=state.active, failed=state.failed
        )
    data["warnings"] = list(report.warnings)
    return data


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_report_json_matches_the_reference(path):
    case = json.loads(path.read_text())
    output = base64.b64decode(case["output_base64"]) if "output_base64" in case else case["output"]
    report = parse_probe(output)
    got, want = report_json(report), _report_json_reference(report)
    assert json.dumps(got) == json.dumps(want)


def _os_release_reference(text):
    import re
    import shlex

    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, raw = line.partition("=")
        if not re.fullmatch(r"[A-Z0-9_]+", key):
            continue
        try:
            words = shlex.split(raw)
        except ValueError:
            words = [raw.strip("\"'")]
        out[key] = " ".join(words)
    return out


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["ID", "NAME", "VERSION_ID", "PRETTY_NAME", "bad-key", "#X"]),
            st.text(alphabet=" \t\"'\\$`#=ab-_.é()", max_size=12),
        ),
        max_size=6,
    )
)
def test_os_release_fast_path_reads_like_shlex(pairs):
    text = "\n".join(f"{k}={v}" for k, v in pairs)
    assert sections.parse_os_release(text) == _os_release_reference(text)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab \r\n@-_k0123456789", max_size=200))
def test_split_reads_markers_anywhere(noise):
    # Noise around real markers, including CRs and marker-like lines, never raises, and a
    # clean section in the middle still reads right.
    text = noise + "\n@@kernel-probe hostname@@\nh1\n\n@@kernel-probe-rc hostname 0@@\n" + noise
    report = parse_probe(text)
    assert report.facts.hostname == "h1"

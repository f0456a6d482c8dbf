"""Pure logic: run/job states, output capping, the environment check parser, URL checks."""

from __future__ import annotations

import pytest

from kernel.exceptions import InvalidInput
from kernel.server.core.text import fit_utf8
from kernel.server.inventory.envcheck import check_key, check_url, parse_check
from kernel.server.jobs import states as jobstate
from kernel.server.jobs.conversation import RunTask, final_from


def test_outcome_of_agent_results():
    assert jobstate.outcome({"exit_code": 0}) == "ok"
    assert jobstate.outcome({"exit_code": 2}) == "failed"
    assert jobstate.outcome({"exit_code": None, "signal": 9}) == "failed"
    assert jobstate.outcome({"exit_code": None, "timed_out": True}) == "timed_out"
    assert jobstate.outcome({"exit_code": None, "cancelled": True}) == "cancelled"
    assert jobstate.outcome({"state": "lost"}) == "lost"


def test_job_state_from_runs():
    assert jobstate.job_state(["queued", "queued"]) == "queued"
    assert jobstate.job_state(["queued", "running"]) == "running"
    assert jobstate.job_state(["ok", "queued"]) == "running"
    assert jobstate.job_state(["ok", "failed", "lost"]) == "finished"
    assert jobstate.job_state(["ok", "cancelled"], cancel_requested=True) == "cancelled"
    assert jobstate.job_state([]) == "finished"


def test_rerun_and_summary():
    assert jobstate.needs_rerun("failed") and jobstate.needs_rerun("unreachable")
    assert not jobstate.needs_rerun("ok") and not jobstate.needs_rerun("running")
    assert jobstate.summary(["ok", "ok", "lost"])["ok"] == 2


def test_output_cap_counts_bytes_and_keeps_utf8_whole():
    import datetime as dt

    task = RunTask(
        "r", 1, 1, "s", "u", "k", None, "c", None, {}, None, 1.0, dt.datetime.now(dt.UTC)
    )
    assert task.add("stdout", "ab", 5) == "ab"
    assert task.add("stdout", "éé", 5) == "é"  # 2 + 2 bytes fit, the last é would not
    assert task.truncated and task.text("stdout") == "abé"
    assert task.add("stdout", "more", 5) == ""
    assert fit_utf8("abcdef", 4) == ("abcd", 4, True)
    assert fit_utf8("é", 1) == ("", 0, True) and fit_utf8("é", 2) == ("é", 2, False)
    f = final_from({"exit_code": 0, "stdout": "x" * 10, "stderr": ""}, cap=4)
    assert (f.state, f.stdout, f.truncated) == ("ok", "xxxx", True)
    lost = final_from({"state": "lost", "reason": "keeper died"})
    assert lost.state == "lost" and "keeper died" in (lost.error or "")


def test_environment_check_facts():
    def section(name, text, rc=0):
        return f"@@kernel-probe {name}@@\n{text}\n\n@@kernel-probe-rc {name} {rc}@@\n"

    df = (
        "Filesystem Type 1B-blocks Used Available Capacity Mounted on\n"
        "/dev/vda1 ext4 31572529152 20000000000 52428800 99% /"
    )
    out = (
        section("version", "1")
        + section("os-release", 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian')
        + section("uname", "Linux 6.1.0-18-amd64 x86_64")
        + section("df", df)
        + section("bash", "5.2.15(1)-release")
        + section("systemd-version", "systemd 252 (252.19-1~deb12u1)\n+PAM +AUDIT")
        + section("systemd", "running")
        + "@@kernel-probe-end@@\n"
    )
    facts = parse_check(out)
    assert facts["os"] == "Debian GNU/Linux 12 (bookworm)" and facts["systemd"] == "252"
    assert facts["disk_free_kb"] == 51200 and facts["kernel"] == "6.1.0-18-amd64"
    assert facts["bash"] == "5.2.15(1)-release"
    assert facts["warnings"] == ["only 50 MiB free on /"]
    bare = parse_check(section("bash", "5.1") + section("systemd", "offline", 1))
    assert bare["systemd"] is None and bare["disk_free_kb"] is None and bare["os"] is None
    assert "systemd is not running" in bare["warnings"][0]
    assert parse_check("")["bash"] is None


@pytest.mark.parametrize(
    "url",
    [
        "ftp://h:1",
        "http://",
        "http://u:p@h:1",
        "http://h:1/x",
        "http://h:1?q",
        "http://h:99999",
        "http://[::1",
        "javascript:alert(1)",
        "h:8001",
    ],
)
def test_bad_agent_urls(url):
    with pytest.raises(InvalidInput):
        check_url(url)


def test_agent_url_fence_and_keys():
    assert check_url("http://10.0.0.1:8001/") == "http://10.0.0.1:8001"
    assert check_url("https://h.example:8001") == "https://h.example:8001"
    assert check_url("http://127.0.0.5:1", "127.0.0.0/8") == "http://127.0.0.5:1"
    for url in ("http://10.0.0.1:1", "http://h.example:1"):
        with pytest.raises(InvalidInput):
            check_url(url, "127.0.0.0/8")
    assert check_key(" " + "a" * 64 + "\n") == "a" * 64
    for key in ("a" * 63, "g" * 64, 5, None):
        with pytest.raises(InvalidInput):
            check_key(key)


def test_every_setting_is_documented():
    """docs/settings.md is the settings table (written by settings.markdown())."""
    from pathlib import Path

    from kernel.server.core.settings import markdown

    doc = (Path(__file__).resolve().parents[2] / "docs" / "settings.md").read_text()
    missing = [row for row in markdown().splitlines() if row not in doc]
    assert not missing, (
        "docs/settings.md is out of date; the rows it lacks are below (write them with "
        "kernel.server.core.settings.markdown()):\n" + "\n".join(missing)
    )

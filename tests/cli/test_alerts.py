"""`kernel alerts …` against a real server process (its alerts service running, as in
production): rules, channels with a test message to a real HTTP sink, the list of alerts
(dead1, whose agent was stopped, is offline), and bad input as clear one-line errors."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.procs import wait_for
from support.receivers import Sink

from .conftest import Kernel


@pytest.fixture
def sink() -> Iterator[Sink]:
    s = Sink()
    yield s
    s.stop()


def test_channels_add_list_test_rm(kernel: Kernel, sink: Sink) -> None:
    added = kernel.json("alerts", "channels", "add", "hook", sink.url())
    assert added["service"] == "JSON" and added["enabled"]
    # the URL from stdin: its secrets never are an argument
    secret = f"json://user:t0ps3cret@127.0.0.1:{sink.port}/other"
    out = kernel.ok("alerts", "channels", "add", "quiet", "-", input=secret + "\n")
    assert "t0ps3cret" not in out.stdout and "channel quiet (JSON)" in out.stdout
    table = kernel.ok("alerts", "channels").stdout
    assert table.splitlines()[0].split() == ["NAME", "SERVICE", "ON", "LAST", "RESULT", "URL"]
    assert "t0ps3cret" not in table
    out = kernel.ok("alerts", "channels", "test", "hook")
    assert out.stdout.startswith("sent a test message to hook")
    assert sink.titles() == ["[Kernel] test message"]
    assert "sent" in kernel.ok("alerts", "channels", "list").stdout
    sent = kernel.json("alerts", "sent", "--channel", "hook")["notifications"]
    assert [(n["event"], n["state"]) for n in sent] == [("test", "sent")]
    kernel.ok("alerts", "channels", "edit", "quiet", "--disable")
    kernel.ok("alerts", "channels", "rm", "quiet")
    kernel.ok("alerts", "channels", "rm", "hook")
    assert kernel.json("alerts", "channels", "list")["channels"] == []


def test_a_test_to_a_target_that_is_down_exits_1_with_the_reason(kernel: Kernel) -> None:
    down = Sink()
    url = down.url()
    down.stop()
    kernel.ok("alerts", "channels", "add", "down", url)
    try:
        out = kernel.run("alerts", "channels", "test", "down")
        assert out.returncode == 1
        assert out.stderr.startswith("kernel: not delivered to down: ")
        assert "Connection error" in out.stderr
        failed = kernel.json("alerts", "sent", "--failed")["notifications"]
        assert failed and failed[0]["channel"] == "down" and failed[0]["deliveries"]
    finally:
        kernel.ok("alerts", "channels", "rm", "down")


def test_rules_and_the_list_of_alerts(kernel: Kernel, sink: Sink) -> None:
    kernel.ok("alerts", "channels", "add", "hook", sink.url())
    try:
        rule = kernel.json("alerts", "rules", "add", "offline", "dead", "--seconds", "1",
                           "-t", "dead", "--channel", "hook", "--hold-resolve", "5")  # fmt: skip
        assert rule["params"] == {"seconds": 1.0} and rule["tags"] == ["dead"]
        assert len(rule["channels"]) == 1
        kernel.ok("alerts", "rules", "add", "disk", "disk full", "--percent", "99.5")
        table = kernel.ok("alerts", "rules").stdout.splitlines()
        assert table[0].split() == ["NAME", "KIND", "ON", "TAGS", "CHANNELS", "HOLD", "CONDITION"]
        assert any(line.startswith("disk full") and "above 99.5 %" in line for line in table)

        def dead_open():
            found = kernel.json("alerts", "list", "--state", "open")["alerts"]
            return [a for a in found if a["server"] == "dead1"]

        (alert,) = wait_for(dead_open, 60)
        assert alert["subject"] == "offline" and alert["rule"] == "dead"
        table = kernel.ok("alerts", "list").stdout.splitlines()
        assert table[0].split()[:5] == ["ID", "STATE", "RULE", "SERVER", "SUBJECT"]
        assert any(" dead1 " in line and " open " in line for line in table)
        shown = kernel.ok("alerts", "show", str(alert["id"])).stdout
        assert "rule: dead (offline)" in shown and "subject: offline" in shown
        wait_for(lambda: sink.titles() == ["[Kernel] PROBLEM dead1: offline"], 30)
        edited = kernel.json("alerts", "rules", "edit", "dead", "--disable")
        assert edited["enabled"] is False
        closed = kernel.json("alerts", "show", str(alert["id"]))
        assert closed["state"] == "resolved" and closed["resolution"] == "rule disabled"
        assert kernel.json("alerts", "list", "-s", "dead1", "--rule", "dead")["alerts"]
    finally:
        for name in ("dead", "disk full"):
            kernel.run("alerts", "rules", "rm", name)
        kernel.run("alerts", "channels", "rm", "hook")


@pytest.mark.parametrize(
    ("args", "status", "says"),
    [
        (["alerts", "rules", "add", "disk", "x"], 1, "a disk rule needs 'percent'"),
        (["alerts", "rules", "add", "disk", "x", "--percent", "120"], 1, "less than 100"),
        (["alerts", "rules", "add", "disk", "x", "--percent", "lots"], 2, "'lots' is not a valid"),
        (["alerts", "rules", "add", "offline", "x", "--percent", "5"], 1, "not a threshold of"),
        (["alerts", "rules", "add", "weather", "x"], 2, "'weather' is not one of"),
        (["alerts", "rules", "add", "offline", "x", "--channel", "nope"], 1,
         "no alert channel named 'nope'"),
        (["alerts", "rules", "edit", "nosuch", "--percent", "5"], 1, "no alert rule named"),
        (["alerts", "channels", "add", "c", "not a url"], 1, "must not contain spaces"),
        (["alerts", "channels", "add", "c", "foo://bar"], 1, "unknown scheme 'foo'"),
        (["alerts", "channels", "add", "c", "https://example.com/hook"], 1, "json://"),
        (["alerts", "channels", "test", "nosuch"], 1, "no alert channel named 'nosuch'"),
        (["alerts", "show", "999999"], 1, "no alert 999999"),
        (["alerts", "show", "abc"], 2, "'abc' is not a valid integer"),
        (["alerts", "list", "--state", "weird"], 2, "'weird' is not one of"),
    ],
)  # fmt: skip
def test_bad_input_is_one_clear_line(kernel: Kernel, args, status, says) -> None:
    out = kernel.run(*args)
    assert out.returncode == status, (out.returncode, out.stdout, out.stderr)
    assert says in out.stderr and out.stderr.count("\n") <= 2, out.stderr


def test_a_viewer_may_look_not_change(kernel: Kernel, fleet) -> None:
    token = fleet.server.new_token("viewer")
    assert kernel.json("alerts", "rules", "list", KERNEL_TOKEN=token) == {"rules": []}
    out = kernel.run("alerts", "rules", "add", "offline", "x", KERNEL_TOKEN=token)
    assert out.returncode == 5 and "needs the operator role" in out.stderr

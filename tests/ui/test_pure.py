"""The console's pure parts: folding identical output, the post-login redirect, the fleet's
filters, a host's brief and what changed in it, and the status feed's bounds."""

from __future__ import annotations

import pytest

from kernel.server.status.brief import brief, changes, display_state, figures, unit_word
from kernel.server.status.feed import StatusFeed
from kernel.server.ui import fleetview
from kernel.server.ui.fold import RunOutput, fold, tail_lines
from kernel.server.ui.security import safe_next


def test_fold_groups_identical_output_biggest_first():
    runs = [RunOutput(f"web{i:02}", "ok", 0, "ok\n", "") for i in range(97)]
    runs += [RunOutput(f"db{i}", "failed", 1, "", "No space left on device\n") for i in range(3)]
    groups = fold(runs)
    assert [len(g.hosts) for g in groups] == [97, 3]
    assert groups[0].stdout == "ok\n" and groups[0].hosts[0] == "web00"
    assert groups[1].stderr == "No space left on device\n" and groups[1].state == "failed"


def test_fold_tells_apart_state_exit_code_and_streams():
    runs = [
        RunOutput("a", "ok", 0, "x", ""),
        RunOutput("b", "failed", 1, "x", ""),
        RunOutput("c", "ok", 0, "", "x"),
        RunOutput("d", "ok", 0, "x", ""),
        RunOutput("e", "ok", 0, "x\0", ""),  # no collision through the separator
    ]
    assert sorted(g.hosts for g in fold(runs)) == [["a", "d"], ["b"], ["c"], ["e"]]


def test_fold_keeps_a_bounded_tail_of_the_whole_output():
    long = "".join(f"line {i}\n" for i in range(1000))
    (g,) = fold([RunOutput("a", "ok", 0, long, ""), RunOutput("b", "ok", 0, long, "")], 10)
    assert g.cut and g.stdout.splitlines() == [f"line {i}" for i in range(990, 1000)]
    # Same tail, different head: not the same output.
    other = "different\n" + long.split("\n", 1)[1]
    assert len(fold([RunOutput("a", "ok", 0, long, ""), RunOutput("b", "ok", 0, other, "")])) == 2


def test_tail_lines():
    assert tail_lines("a\nb\nc\n", 2) == ("b\nc\n", True)
    assert tail_lines("a\nb", 1) == ("b", True)
    assert tail_lines("a\n", 5) == ("a\n", False)
    assert tail_lines("", 5) == ("", False)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/jobs?state=ok", "/jobs?state=ok"),
        ("/servers/3#charts", "/servers/3#charts"),
        (None, "/"),
        ("", "/"),
        ("//evil.example/", "/"),
        ("/\t/evil.example/", "/"),
        ("/\r\n/evil.example", "/"),
        ("/\x00", "/"),
        ("/\x7f", "/"),
        ("/\\evil.example", "/"),
        ("\\\\evil.example", "/"),
        ("https://evil.example/", "/"),
        ("javascript:alert(1)", "/"),
        ("evil.example", "/"),
        ("/%2F%2Fevil.example", "/%2F%2Fevil.example"),  # a path on this site, percent-encoded
    ],
)
def test_safe_next_stays_on_the_site(target, expected):
    assert safe_next(target) == expected


def _row(**kw):
    row = {
        "id": 1, "name": "web1", "state": "online", "agent_url": "http://10.0.0.7:8001",
        "tags": ["web"], "description": "front", "server_facts": {}, "last_error": None,
        "health": "online", "facts": {"os_name": "Debian 12"}, "units": {}, "metrics": {},
        "probed_at": None, "probe_error": None,
    }  # fmt: skip
    row.update(kw)
    return row


def test_fleet_entries_and_filters():
    units = {"sums": "sums.service", "web": "nginx.service"}
    rows = [
        _row(units={"sums.service": {"installed": True, "active_state": "active"}}),
        _row(id=2, name="db1", tags=["db"], health="offline", probe_error="timed out"),
        _row(id=3, name="new", state="pending", health=None, agent_url=None, tags=[]),
    ]
    hosts = fleetview.hosts(rows, units)
    assert [h["state"] for h in hosts] == ["online", "offline", "pending"]
    assert hosts[0]["services"] == [
        ("sums", "sums.service", "active"),
        ("web", "nginx.service", "missing"),
    ]
    assert hosts[0]["address"] == "10.0.0.7" and hosts[1]["error"] == "timed out"
    assert fleetview.counts(hosts)["offline"] == 1
    keep = fleetview.Filters.of({"q": "DEBIAN", "tag": "web"})
    assert [h["server"] for h in hosts if keep.keeps(h)] == ["web1"]
    assert fleetview.Filters.of({"state": "nonsense"}).state == ""
    assert fleetview.view_for(fleetview.Filters(), 3) == "cards"
    assert fleetview.view_for(fleetview.Filters(), 500) == "table"
    assert fleetview.view_for(fleetview.Filters(view="cards"), 500) == "cards"


def test_brief_and_changes():
    assert display_state("pending", "unknown") == "pending"
    assert display_state("init_failed", "online") == "init_failed"
    assert display_state("online", "offline") == "offline"
    assert display_state("offline", "online") == "online"
    assert display_state("online", "unknown") == "online"
    assert unit_word({"installed": False}) == "missing"
    assert unit_word({"installed": True, "active_state": "failed"}) == "failed"
    assert unit_word({"installed": True, "active_state": "weird"}) == "inactive"
    assert unit_word("garbage") == "missing"
    f = figures({"mem_used": 1, "mem_total": 4, "disks": [{"used": 1, "total": 2}, "x"],
                 "cpu_percent_interval": 12.345, "load1": "bad"})  # fmt: skip
    assert f == {"cpu": 12.3, "mem": 0.25, "disk": 0.5, "load1": None, "uptime": None}
    a = brief(1, "h", "online", "online", {}, {"load1": 1.0})
    b = brief(1, "h", "online", "offline", {}, {"load1": 2.0})
    assert changes(None, a) == ["state", "units", "figures"]
    assert changes(a, b) == ["state", "figures"] and changes(a, a) == []


def test_status_feed_is_bounded_and_resumable():
    feed = StatusFeed(keep=3)
    assert feed.after(0, 0.01) == []
    feed.publish([({"server_id": i}, ["state"]) for i in range(1, 6)])
    assert feed.last_seq == 5
    assert feed.after(0, 0) is None  # the first two are gone: start again from a snapshot
    assert [c.host["server_id"] for c in feed.after(3, 0)] == [4, 5]
    assert feed.after(5, 0.01) == []
    assert feed.parse_id(f"{feed.epoch}-4") == 4
    for bad in (
        None,
        "",
        "x-1",
        f"{feed.epoch}-",
        f"{feed.epoch}-1e3",
        f"{feed.epoch}-" + "9" * 30,
    ):
        assert feed.parse_id(bad) is None


def test_vendored_files_are_the_pinned_ones():
    import hashlib
    from pathlib import Path

    vendor = Path(__file__).resolve().parents[2] / "src/kernel/server/ui/static/vendor"
    listed = (vendor / "SHA256SUMS").read_text().splitlines()
    sums = {name: digest for digest, name in (line.split() for line in listed)}
    for name, digest in sums.items():
        assert hashlib.sha256((vendor / name).read_bytes()).hexdigest() == digest, name
    lock = [
        line.split()
        for line in (vendor / "packages.lock").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for _package, _version, sha, *files in lock:
        assert len(sha) == 64
        for pair in files:
            assert pair.split("=", 1)[1] in sums, pair
        assert any("LICENSE" in pair for pair in files), _package


def test_dashboard_pages():
    from kernel.server.ui.fleetview import Filters, page_of

    kept = [{"server_id": i} for i in range(1, 13)]
    p = page_of(kept, 2, 5)
    assert (p.ids, p.number, p.pages, p.first, p.last, p.kept) == (
        [6, 7, 8, 9, 10],
        2,
        3,
        6,
        10,
        12,
    )
    assert page_of(kept, 99, 5).number == 3 and page_of(kept, 99, 5).ids == [11, 12]
    assert page_of([], 1, 5) == page_of([], 3, 5) and page_of([], 1, 5).first == 0
    assert Filters.of({"page": "x"}).page == 1 and Filters.of({"page": "9" * 40}).page == 1
    assert Filters.of({"page": "0"}).page == 1 and Filters.of({"page": "3"}).page == 3
    f = Filters.of({"q": "a b&c", "tag": "web", "page": "2"})
    assert f.query(3) == "q=a+b%26c&tag=web&page=3" and f.query(1) == "q=a+b%26c&tag=web"

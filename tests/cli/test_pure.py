"""The CLI's pure parts, without a server: host sets, SSE parsing, line splitting, grouping,
summaries, URLs, targets, config precedence, and the exec fast path against click."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kernel.cli import config, errors, nodeset
from kernel.cli.errors import UsageError
from kernel.cli.exec_args import ExecArgs, parse_fast
from kernel.cli.follow import JobOptions
from kernel.cli.http1 import parse_url
from kernel.cli.output import Style
from kernel.cli.render import Lines, group_blocks, run_detail, summary
from kernel.cli.sse import SseParser
from kernel.cli.tables import ago, duration, size, table
from kernel.cli.targets import Targets, choose

PLAIN = Style(False)

# -- host sets ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("web1", ["web1"]),
        ("web[1-3]", ["web1", "web2", "web3"]),
        ("web[1-2,7],db01", ["web1", "web2", "web7", "db01"]),
        ("n[08-10]", ["n08", "n09", "n10"]),
        ("r[1-2]-n[1-2]", ["r1-n1", "r1-n2", "r2-n1", "r2-n2"]),
        ("a, b,,a", ["a", "b"]),
        ("x[3]y", ["x3y"]),
    ],
)
def test_expand(text: str, names: list[str]) -> None:
    assert nodeset.expand(text) == names


@pytest.mark.parametrize(
    "bad", ["web[1-", "web]", "web[a-b]", "web[3-1]", "w[[1]]", "w[1-9999999]"]
)
def test_expand_refuses_malformed_sets(bad: str) -> None:
    with pytest.raises(UsageError):
        nodeset.expand(bad)


@pytest.mark.parametrize(
    ("names", "folded"),
    [
        (["web1"], "web1"),
        (["web2", "web1", "web3"], "web[1-3]"),
        (["web1", "web3", "web4", "db1"], "db1,web[1,3-4]"),
        (["n01", "n02", "n10"], "n[01-02,10]"),
        (["n9", "n10", "n11"], "n[9-11]"),
        (["alpha", "beta", "web1"], "alpha,beta,web1"),
        (["r1-n1", "r1-n2"], "r1-n[1-2]"),
        ([], ""),
    ],
)
def test_fold(names: list[str], folded: str) -> None:
    assert nodeset.fold(names) == folded


def test_fold_and_expand_round_trip() -> None:
    names = [f"web{i}" for i in (1, 2, 3, 5, 8, 9, 10, 11)] + ["db01", "db02", "solo"]
    assert sorted(nodeset.expand(nodeset.fold(names))) == sorted(names)


# -- SSE ---------------------------------------------------------------------------------------

STREAM = (
    b"retry: 2000\n\n"
    b'id: e1-1\nevent: snapshot\ndata: {"a": 1}\n\n'
    b": keepalive\n\n"
    b"id: e1-2\r\nevent: output\r\ndata: line one\r\ndata: line two\r\n\r\n"
    b"event: end\rdata:{}\r\r"
)


@pytest.mark.parametrize("size_", [1, 2, 3, 7, 1000])
def test_sse_parser_in_any_pieces(size_: int) -> None:
    p = SseParser()
    events = []
    for i in range(0, len(STREAM), size_):
        events.extend(p.feed(STREAM[i : i + size_]))
    assert [(e.type, e.data, e.id) for e in events] == [
        ("snapshot", '{"a": 1}', "e1-1"),
        ("output", "line one\nline two", "e1-2"),
        ("end", "{}", "e1-2"),
    ]
    assert p.last_id == "e1-2"


def test_sse_parser_garbage() -> None:
    p = SseParser()
    assert p.feed(b"\xff\xfe\n\ndata: \xff\n\n")[0].data == "\ufffd"
    assert p.feed(b"id: a\x00b\n\n") == [] and p.last_id is None


# -- lines, groups, summaries --------------------------------------------------------------


def test_lines_split_across_chunks() -> None:
    lines = Lines()
    assert lines.feed("r1", "stdout", "a\nb") == ["a"]
    assert lines.feed("r2", "stdout", "x") == []
    assert lines.feed("r1", "stdout", "c\n\n") == ["bc", ""]
    assert lines.feed("r1", "stderr", "e") == []
    assert lines.flush("r1") == [("stderr", "e")]
    assert lines.flush("r2") == [("stdout", "x")]
    assert lines.flush("r2") == []


def test_group_blocks_most_hosts_first() -> None:
    blocks = group_blocks({"web1": ["a"], "web2": ["a"], "db1": ["b", "c"], "web3": ["a"]}, PLAIN)
    assert blocks == [
        "---------------\nweb[1-3] (3)\n---------------\na\n",
        "---------------\ndb1 (1)\n---------------\nb\nc\n",
    ]


def _run(server: str, state: str, **kw: Any) -> dict[str, Any]:
    return {"server": server, "state": state, **kw}


def test_summary_names_every_host_that_did_not_succeed() -> None:
    runs = [
        _run("web1", "ok"),
        _run("web2", "failed", exit_code=2),
        _run("web3", "failed", exit_code=2),
        _run("web4", "failed", exit_code=None, signal=9),
        _run("web5", "unreachable", error="connect timeout"),
        _run("web6", "timed_out"),
    ]
    lines = summary(7, runs, 1.234, PLAIN)
    assert lines == [
        "job 7: 1 ok, 3 failed, 1 timed_out, 1 unreachable (6 hosts, 1.23 s)",
        "  failed: web[2-3]: exit 2",
        "  failed: web4: killed by signal 9",
        "  timed_out: web6: timed out",
        "  unreachable: web5: connect timeout",
    ]
    assert run_detail(_run("x", "lost", error="e" * 300)).endswith("...")


@pytest.mark.parametrize(
    ("states", "status"),
    [
        ([], errors.OK),
        (["ok", "ok"], errors.OK),
        (["ok", "failed"], errors.FAILED),
        (["timed_out"], errors.FAILED),
        (["cancelled"], errors.FAILED),
        (["failed", "unreachable"], errors.UNREACHABLE),
        (["lost"], errors.UNREACHABLE),
    ],
)
def test_exit_status(states: list[str], status: int) -> None:
    assert errors.exit_status(states) == status


# -- URLs, targets ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "base", "host", "port"),
    [
        ("http://127.0.0.1:8002", "http://127.0.0.1:8002", "127.0.0.1", 8002),
        ("https://Kernel.Example/", "https://kernel.example", "kernel.example", 443),
        ("kernel.example:8002", "http://kernel.example:8002", "kernel.example", 8002),
        ("http://[::1]:8002/k/", "http://[::1]:8002/k", "::1", 8002),
        ("http://h:80", "http://h", "h", 80),
    ],
)
def test_parse_url(text: str, base: str, host: str, port: int) -> None:
    url = parse_url(text)
    assert (url.base, url.host, url.port) == (base, host, port)


@pytest.mark.parametrize(
    "bad",
    [
        "ftp://x",
        "http://",
        "http://h:0",
        "http://h:99999",
        "http://u@h",
        "http://h?x=1",
        "http://[::1",
    ],
)
def test_parse_url_refuses(bad: str) -> None:
    with pytest.raises(UsageError):
        parse_url(bad)


SERVERS = [
    {"name": "web1", "tags": ["web"], "agent_url": "http://a"},
    {"name": "web2", "tags": ["web", "eu"], "agent_url": "http://b"},
    {"name": "db1", "tags": ["db", "eu"], "agent_url": "http://c"},
    {"name": "new1", "tags": ["web"], "agent_url": None},
]


def test_targets_parse_and_choose() -> None:
    t = Targets.parse(["web[1-2],db1", "web1"], ["eu,", "web"], False)
    assert t.body() == {"servers": ["web1", "web2", "db1"], "tags": ["eu", "web"], "all": False}
    assert choose(SERVERS, Targets(tags=["web"])) == (["web1", "web2"], ["new1"])
    assert choose(SERVERS, Targets(all=True))[0] == ["db1", "web1", "web2"]
    assert choose(SERVERS, Targets(servers=["db1"], tags=["web"]))[0] == ["db1", "web1", "web2"]
    with pytest.raises(UsageError, match="no such server"):
        choose(SERVERS, Targets(servers=["nope"]))
    with pytest.raises(UsageError, match="not joined"):
        choose(SERVERS, Targets(servers=["new1"]))
    with pytest.raises(UsageError, match="no joined server"):
        choose(SERVERS, Targets(tags=["none"]))
    with pytest.raises(UsageError, match="--server NAME"):
        Targets().require("exec")


# -- tables --------------------------------------------------------------------------------------


def test_table_and_formats() -> None:
    text = table(["A", "LONGER"], [["x", "1"], ["yyyy", None]], PLAIN)
    assert text == "A     LONGER\nx     1\nyyyy"
    coloured = table(["A", "B"], [["ok", "z"]], Style(True), paint={0: Style(True).state})
    assert "\x1b[32mok\x1b[0m  z" in coloured
    cut = table(["A", "B"], [["a", "b" * 50]], PLAIN, width=10)
    assert cut.splitlines()[1] == "a  bbbbbb…"
    assert duration(0.0123) == "12 ms" and duration(75) == "75 s" and duration(7200) == "2 h"
    assert size(1536) == "1.5 KiB" and size(None) == "-"
    assert ago(None) == "-"


# -- config precedence ------------------------------------------------------------------------


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in ("KERNEL_URL", "KERNEL_TOKEN", "KERNEL_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    path = tmp_path / "c.json"
    monkeypatch.setenv("KERNEL_CONFIG", str(path))
    config.save(
        {
            "profiles": {
                "default": {"url": "http://a:1", "token": "kt_a"},
                "b": {"url": "http://b:2", "token": "kt_b"},
            }
        }
    )
    assert (path.stat().st_mode & 0o777) == 0o600
    return path


def test_session_precedence(cfg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = config.session()
    assert (s.url.base, s.token, s.profile) == ("http://a:1", "kt_a", "default")
    s = config.session("b")
    assert (s.url.base, s.token) == ("http://b:2", "kt_b")
    monkeypatch.setenv("KERNEL_PROFILE", "b")
    assert config.session().token == "kt_b"
    monkeypatch.setenv("KERNEL_TOKEN", "kt_env")
    assert config.session().token == "kt_env"
    monkeypatch.delenv("KERNEL_TOKEN")
    # Another URL from the environment: the profile's token stays home.
    monkeypatch.setenv("KERNEL_URL", "http://elsewhere:3")
    s = config.session()
    assert s.url.base == "http://elsewhere:3" and s.token is None
    # The same URL written differently is the same server.
    monkeypatch.setenv("KERNEL_URL", "HTTP://b:2/")
    assert config.session().token == "kt_b"
    monkeypatch.delenv("KERNEL_URL")
    with pytest.raises(errors.AuthError, match="no profile 'zz'"):
        config.session("zz")


# -- the exec fast path gives what click gives ----------------------------------------------------

SAME = [
    ["exec", "--", "uptime"],
    ["exec"],
    ["exec", "-s", "web1", "--", "uptime"],
    ["exec", "-sweb1", "-t", "a,b", "--tag=c", "-a", "--", "x", "-y"],
    ["exec", "--server=w[1-3]", "-s", "db1", "uname", "-a"],
    ["--profile", "p", "exec", "-s", "w", "echo", "-n", "hi"],
    ["--profile=p", "exec", "-a", "--", "true"],
    ["exec", "--profile", "q", "-a", "--", "true"],
    ["exec", "--script", "f.sh", "-a", "--", "a", "b"],
    ["exec", "--script=-", "-a"],
    [
        "exec",
        "--timeout",
        "1.5",
        "-p",
        "3",
        "-e",
        "A=1",
        "-e",
        "B=2=3",
        "--cwd",
        "/tmp",
        "--title",
        "t",
        "-a",
        "--",
        "x",
    ],
    ["exec", "-b", "--json", "-q", "-N", "--color", "never", "--no-wait", "--no-cancel", "-a", "x"],
    ["exec", "--group", "--quiet", "--no-prefix", "--color=always", "--all", "--parallel=2", "x"],
    ["exec", "-a", "-", "x"],
    ["exec", "-s", "a", "-s", "b", "--", "--", "x"],
    ["exec", "--timeout", "600", "--timeout", "5", "-a", "x"],
]

FALLBACK = [
    ["exec", "--help"],
    ["exec", "-h"],
    ["exec", "-aq", "--", "x"],
    ["exec", "--bogus", "x"],
    ["exec", "--timeout", "x", "-a", "y"],
    ["exec", "--timeout", "0", "-a", "y"],
    ["exec", "--timeout", "nan", "-a", "y"],
    ["exec", "--parallel", "0", "-a", "y"],
    ["exec", "-e", "X", "-a", "y"],
    ["exec", "--color", "pink", "-a", "y"],
    ["exec", "--all=1", "x"],
    ["exec", "-s"],
    ["servers", "list"],
    ["--profile", "p", "servers", "list"],
    [],
]


def click_exec_args(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> ExecArgs:
    from kernel.cli import app

    got: list[ExecArgs] = []
    monkeypatch.setattr(app, "run_exec", lambda a: got.append(a) or 0)
    app.cli.main(argv, prog_name="kernel", standalone_mode=False)
    return got[0]


@pytest.mark.parametrize("argv", SAME, ids=" ".join)
def test_fast_path_parses_as_click_does(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KERNEL_PROFILE", raising=False)
    fast = parse_fast(argv)
    assert fast is not None
    assert fast == click_exec_args(argv, monkeypatch)


@pytest.mark.parametrize("argv", FALLBACK, ids=" ".join)
def test_fast_path_leaves_the_rest_to_click(argv: list[str]) -> None:
    assert parse_fast(argv) is None


def test_fast_path_values() -> None:
    a = parse_fast(["exec", "-s", "w", "-b", "--timeout", "2", "--", "echo", "x"])
    assert a == ExecArgs(
        servers=["w"], command=["echo", "x"], timeout=2.0, opts=JobOptions(group=True)
    )


def test_the_cli_never_imports_the_server_or_the_agent() -> None:
    code = "import sys, kernel.cli.app; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert "click" in out
    assert not [m for m in out if m.startswith(("kernel.server", "kernel.agent", "flask"))]


def test_exec_path_does_not_import_click_or_the_server() -> None:
    """What `kernel exec` loads: no click, no server, no agent, nothing heavy."""
    code = "import sys; from kernel.cli import main, execute; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    ).stdout.split()
    assert any(m.startswith("kernel.cli.") for m in out)
    for heavy in (
        "click",
        "kernel.server",
        "kernel.agent",
        "http.client",
        "ssl",
        "typing",
        "dataclasses",
        "socket",
        "urllib.parse",
        "email",
        "rich",
        "httpx",
    ):
        assert heavy not in out, heavy

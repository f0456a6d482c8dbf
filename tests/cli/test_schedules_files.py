"""``kernel schedules`` and ``kernel files`` against the real server and agents on loopback
(the agents are this machine: pushes go to this test's tmp dir)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.agents import Agent, start_agent
from support.servers import ServerProc

from .conftest import Fleet, Kernel

# -- schedules -------------------------------------------------------------------------------


def test_schedules_add_list_show_run_edit_rm(kernel: Kernel, fleet: Fleet) -> None:
    out = kernel.run("schedules", "add", "hourly", "--cron", "@hourly", "-t", "web", "--", "uptime")
    assert out.returncode == 2 and "--tz ZONE" in out.stderr
    out = kernel.run(
        "schedules", "add", "x", "--cron", "garbage", "--tz", "UTC", "-a", "--", "true"
    )
    assert out.returncode == 1
    assert out.stderr.startswith(
        "kernel: cron expression 'garbage' is not valid: it needs 5 fields"
    )
    out = kernel.run("schedules", "add", "x", "--cron", "* * * * *", "--tz", "Mars/Base", "-a",
                     "--", "true")  # fmt: skip
    assert out.returncode == 1 and "unknown time zone 'Mars/Base'" in out.stderr
    out = kernel.run("schedules", "add", "x", "--cron", "* * * * *", "--tz", "UTC", "--", "true")
    assert out.returncode == 2 and "--server NAME, --tag TAG or --all" in out.stderr

    made = json.loads(kernel.ok("schedules", "add", "hourly", "--cron", "@hourly", "--tz",
                                "Europe/Berlin", "-t", "web", "-d", "über", "--skip-if-running",
                                "--json", "--", "echo", "'$HOSTNAME'", "tick").stdout)  # fmt: skip
    assert made["cmd"] == "echo '$HOSTNAME' tick" and made["skip_if_running"]
    assert made["targets"] == {"servers": [], "tags": ["web"], "all": False}
    out = kernel.ok("schedules", "add", "nightly", "--cron", "0 3 * * *", "--tz", "UTC",
                    "-s", "web1", "--disabled", "--", "true")  # fmt: skip
    assert "schedule nightly (id" in out.stderr

    table = kernel.ok("schedules", "list").stdout.splitlines()
    assert table[0].split() == ["NAME", "ON", "CRON", "ZONE", "NEXT", "LAST", "TARGETS"]
    hourly = next(line for line in table if line.startswith("hourly "))
    assert "Europe/Berlin" in hourly and " in " in hourly and "tag:web" in hourly
    nightly = next(line for line in table if line.startswith("nightly "))
    assert " no " in nightly and "web1" in nightly

    out = kernel.run("schedules", "run", "hourly")
    assert out.returncode == 0, out
    assert set(out.stdout.splitlines()) == {"web1: $HOSTNAME tick", "web2: $HOSTNAME tick"}
    shown = kernel.ok("schedules", "show", "hourly").stdout
    assert "cron: @hourly in Europe/Berlin — At the start of every hour" in shown
    assert "run by hand" in shown and "ok=2" in shown and "next: " in shown
    as_json = kernel.json("schedules", "show", "hourly")
    assert as_json["firings"][0]["by"] == "tester"

    edited = kernel.json("schedules", "edit", "hourly", "--cron", "*/10 * * * *",
                         "--no-skip-if-running", "--command", "echo edited")  # fmt: skip
    assert edited["cron"] == "*/10 * * * *" and not edited["skip_if_running"]
    assert edited["cmd"] == "echo edited"
    out = kernel.run("schedules", "edit", "hourly")
    assert out.returncode == 2 and "nothing to change" in out.stderr
    out = kernel.run("schedules", "edit", "hourly", "--tz", "Nowhere")
    assert out.returncode == 1 and "unknown time zone" in out.stderr
    assert kernel.json("schedules", "disable", "hourly")["next_at"] is None
    enabled = kernel.ok("schedules", "enable", "hourly")
    assert "enabled; next at" in enabled.stderr

    out = kernel.ok("schedules", "next", "0 9 * * MON-FRI", "--tz", "Asia/Shanghai", "-n", "2")
    lines = out.stdout.splitlines()
    assert lines[0] == "0 9 * * MON-FRI: At 09:00 on Monday through Friday (Asia/Shanghai)"
    assert len(lines) == 3 and all("T09:00:00+08:00" in line for line in lines[1:])
    out = kernel.run("schedules", "next", "99 * * * *", "--tz", "UTC")
    assert out.returncode == 1 and "bad minute" in out.stderr

    out = kernel.run("schedules", "rm", "hourly")
    assert out.returncode == 2 and "--yes" in out.stderr
    assert "deleted" in kernel.ok("schedules", "rm", "hourly", "--yes").stderr
    kernel.ok("schedules", "rm", "nightly", "--yes")
    out = kernel.run("schedules", "show", "hourly")
    assert out.returncode == 1 and out.stderr == "kernel: no schedule named 'hourly'\n"
    jobs = kernel.json("jobs", "list")["jobs"]
    assert any(j["kind"] == "schedule" for j in jobs)  # its jobs stay
    assert "schedule hourly" in kernel.ok("jobs", "list").stdout


# -- files -----------------------------------------------------------------------------------


def test_files_push_and_get(kernel: Kernel, tmp_path: Path) -> None:
    src = tmp_path / "app.conf"
    src.write_bytes(b"port = 80\n\xff\x00\n")
    dest_dir = tmp_path / "pushed"
    dest_dir.mkdir()
    dest = dest_dir / "app.conf"
    out = kernel.run("files", "push", str(src), str(dest), "-s", "web1", "-m", "600",
                     "-o", "root:root")  # fmt: skip
    assert out.returncode == 0, out
    assert out.stdout.startswith(f"web1: kernel: wrote {dest} (13 bytes, sha256 ")
    assert dest.read_bytes() == src.read_bytes()
    assert oct(dest.stat().st_mode & 0o7777) == "0o600"
    assert sorted(p.name for p in dest_dir.iterdir()) == ["app.conf"]

    out = kernel.run("files", "push", str(src), str(tmp_path / "nodir" / "x"), "-s", "web1")
    assert out.returncode == 4
    assert f"web1: kernel: directory {tmp_path / 'nodir'} does not exist on this host" in out.stderr
    assert "failed: web1: exit 96" in out.stderr
    out = kernel.run("files", "push", str(src), "relative/x", "-s", "web1")
    assert out.returncode == 2 and "must be absolute" in out.stderr
    out = kernel.run("files", "push", str(src), "/tmp/../x", "-s", "web1")
    assert out.returncode == 1 and "'path' must not have '.', '..'" in out.stderr
    out = kernel.run("files", "push", str(tmp_path / "missing"), "/tmp/x", "-s", "web1")
    assert out.returncode == 2 and "cannot read" in out.stderr
    out = kernel.run("files", "push", str(src), "/tmp/x", "-s", "web1", "-m", "999")
    assert out.returncode == 1 and "'mode' must be an octal mode" in out.stderr

    out = kernel.run("files", "get", "web1", str(dest))
    assert out.returncode == 0 and out.stdout == "port = 80\n\ufffd\x00\n"  # as text here
    copy = tmp_path / "copy"
    out = kernel.ok("files", "get", "web1", str(dest), "-o", str(copy))
    assert copy.read_bytes() == src.read_bytes()
    assert f"web1:{dest} → {copy} (13 B)" in out.stderr
    out = kernel.run("files", "get", "web1", str(tmp_path / "none"))
    assert out.returncode == 1
    assert out.stderr == f"kernel: web1: no such file on this host: {tmp_path / 'none'}\n"
    out = kernel.run("files", "get", "nosuch", "/etc/hosts")
    assert out.returncode == 1 and "no server named 'nosuch'" in out.stderr

    listed = kernel.json("files", "list")
    ours = [f for f in listed["files"] if f["name"] == "app.conf"]
    assert ours and ours[0]["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert "caps: upload 1.0 GiB, get 4.0 MiB" in kernel.ok("files", "list").stderr
    gone = kernel.json("files", "rm", ours[0]["id"])
    assert gone["id"] == ours[0]["id"]
    out = kernel.run("files", "rm", "nope")
    assert out.returncode == 1


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Kernel, Agent]]:
    """A server with small caps (uploads 1000 bytes, fetches 100) and one agent."""
    root = tmp_path_factory.mktemp("small")
    data = root / "data"
    data.mkdir()
    server = ServerProc(data, KERNEL_FILES_MAX_UPLOAD="1000", KERNEL_FILES_MAX_FETCH="100").start()
    base = 100 + (os.getpid() % 50) * 3
    agent = start_agent(root / "a1", f"127.1.{base // 250}.{base % 250 + 2}")
    try:
        server.login()
        with server.api() as c:
            r = c.post("/api/v1/servers", json={"name": "s1", "agent_url": agent.url,
                                                "agent_key": agent.key})  # fmt: skip
            assert r.status_code == 201, r.text
        yield Kernel(server, root / "home", server.token), agent
    finally:
        left = agent.teardown()
        server.stop()
        assert not left


def test_files_caps(small_server: tuple[Kernel, Agent], tmp_path: Path) -> None:
    kernel, _agent = small_server
    big = tmp_path / "big"
    big.write_bytes(b"x" * 1001)
    out = kernel.run("files", "push", str(big), str(tmp_path / "big.copy"), "-s", "s1")
    assert out.returncode == 2
    assert out.stderr == (
        f"kernel: {big} is 1001 B (1001 bytes): more than the server takes (1000 B, its "
        "FILES_MAX_UPLOAD)\n"
    )
    fits = tmp_path / "fits"
    fits.write_bytes(b"y" * 1000)
    kernel.ok("files", "push", str(fits), str(tmp_path / "fits.copy"), "-s", "s1", "-q")
    assert (tmp_path / "fits.copy").read_bytes() == b"y" * 1000
    out = kernel.run("files", "get", "s1", str(fits))
    assert out.returncode == 1
    assert out.stderr == (
        f"kernel: s1: {fits} is 1000 bytes, more than the cap of 100 bytes "
        "(FILES_MAX_FETCH, 100 bytes)\n"
    )
    caps = json.loads(kernel.ok("files", "list", "--json").stdout)  # what the CLI checks
    assert (caps["max_upload"], caps["max_fetch"]) == (1000, 100)

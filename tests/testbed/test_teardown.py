"""Nothing of a bed survives it: on exit, on Ctrl-C, on SIGTERM; leftovers of a killed run
are found by their prefix and removed."""

import json
import signal
import subprocess
import sys
import textwrap

import pytest

from kernel.exceptions import TestbedError
from kernel.testbed import Testbed, cli, teardown, unsupported_reason
from kernel.testbed.pytest_plugin import _unavailable
from kernel.testbed.system import cgroup_procs

from .helpers import alive, leftovers

pytestmark = pytest.mark.testbed
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.fixture(autouse=True)
def _needs_hosts():
    reason = _unavailable("light")
    if reason:
        pytest.skip(reason)


needs_full = pytest.mark.skipif(
    _unavailable("full") is not None, reason=f"no full hosts: {_unavailable('full')}"
)


@needs_full
def test_teardown_leaves_no_namespace_mount_bridge_or_process():
    with Testbed(1, "light") as bed:
        bed.add_hosts(1, mode="full")
        prefix = bed.prefix
        pids = [p for h in bed.hosts for p in cgroup_procs(h.cgroup)]
        launchers = [h.record.launcher_pid for h in bed.hosts if h.record.launcher_pid]
        assert len(pids) > 3 and leftovers(prefix)
        bed.hosts[1].run("systemctl start kernel-agent", check=True)
    assert leftovers(prefix) == []
    assert not any(alive(p) for p in pids + launchers)
    bed.down()  # twice is fine


def _start_bed_in_child(mode="light"):
    code = textwrap.dedent(
        f"""
        import time
        from kernel.testbed import Testbed
        with Testbed(1, {mode!r}) as bed:
            print(bed.prefix, flush=True)
            time.sleep(120)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    prefix = child.stdout.readline().strip()
    assert prefix.startswith("kt"), prefix
    assert leftovers(prefix)
    return child, prefix


@needs_full
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_run_tears_its_bed_down(sig):
    child, prefix = _start_bed_in_child("full")
    child.send_signal(sig)
    child.wait(timeout=30)
    child.stdout.close()
    assert leftovers(prefix) == []


def test_down_removes_leftovers_of_a_killed_run(capsys):
    child, prefix = _start_bed_in_child()
    child.kill()
    child.wait()
    child.stdout.close()
    assert leftovers(prefix)
    assert cli.main(["list", "--json"]) == 0
    rows = [r for r in json.loads(capsys.readouterr().out) if r["bed"] == prefix]
    assert rows and rows[0]["state"] == "leftover"
    assert cli.main(["down", prefix]) == 0
    assert leftovers(prefix) == []


def test_down_refuses_a_bed_of_a_live_process(capsys):
    with Testbed(1) as bed:
        assert cli.main(["down", bed.prefix]) == 1
        assert "belongs to running process" in capsys.readouterr().err
        assert bed.hosts[0].client().healthz()


def test_sweep_removes_orphans_by_prefix_only():
    orphan = "ktfff0-h001"
    subprocess.run(["ip", "netns", "add", orphan], check=True)
    subprocess.run(["ip", "netns", "add", "kernel-test-keep"], check=True)
    try:
        with Testbed(1) as bed:
            removed = teardown.sweep()
            assert f"netns {orphan}" in removed
            assert not any(bed.prefix in r for r in removed)
            assert bed.hosts[0].client().healthz()
        assert (
            "kernel-test-keep"
            in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        )
    finally:
        subprocess.run(["ip", "netns", "del", orphan], capture_output=True)
        subprocess.run(["ip", "netns", "del", "kernel-test-keep"], capture_output=True)


def test_not_root_is_a_clear_error():
    as_nobody = [*NOBODY, sys.executable]
    if subprocess.run([*as_nobody, "-c", "import kernel"], capture_output=True).returncode:
        # The checkout (and its .venv) is not readable by nobody, e.g. cloned into a 0700
        # mktemp dir: run as root with the effective uid the CLI sees made non-root instead.
        as_nobody = [sys.executable, "-c", "import os, runpy; os.geteuid = lambda: 65534; "
                     "runpy.run_module('kernel.testbed.cli', run_name='__main__')"]  # fmt: skip
    else:
        as_nobody += ["-m", "kernel.testbed.cli"]
    r = subprocess.run(
        [*as_nobody, "up", "1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 1
    assert r.stderr.startswith("kernel-testbed: error: cannot make light test hosts: ")
    assert "needs root" in r.stderr and "Traceback" not in r.stderr


def test_missing_tools_are_named(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    assert "missing tools: ip, nsenter" in unsupported_reason("full")
    with pytest.raises(TestbedError, match="missing tools"):
        Testbed(1).up()


def test_an_agent_that_never_answers_is_an_error_not_a_hang(tmp_path):
    silent = tmp_path / "silent.py"
    silent.write_text("import time\ntime.sleep(60)\n")
    broken = tmp_path / "broken.py"
    broken.write_text("raise SystemExit('agent broke')\n")
    with Testbed(0, agent_file=silent) as bed:
        with pytest.raises(TestbedError, match="timed out after 2 s"):
            bed.add_hosts(1, timeout=2)
    assert leftovers(bed.prefix) == []
    with pytest.raises(TestbedError, match="agent broke"):
        Testbed(1, agent_file=broken).up()


def test_beds_made_at_once_never_collide():
    import threading

    beds = [Testbed(1) for _ in range(3)]
    threads = [threading.Thread(target=b.up) for b in beds]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len({b.prefix for b in beds}) == 3
        assert len({str(b.subnet) for b in beds}) == 3
        for b in beds:
            with b.hosts[0].client() as c:
                assert c.exec("echo hi").stdout == "hi\n"
    finally:
        for b in beds:
            b.down()

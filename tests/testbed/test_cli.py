"""`kernel-testbed up` leaves hosts running for other processes; `list` and `down` find them."""

import json
import subprocess
import sys

import pytest

from kernel.testbed import Testbed
from kernel.testbed.pytest_plugin import _unavailable

from .helpers import answers, leftovers

pytestmark = pytest.mark.testbed


def kernel_testbed(*args):
    return subprocess.run(
        [sys.executable, "-m", "kernel.testbed.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.skipif(_unavailable("full") is not None, reason=str(_unavailable("full")))
def test_up_list_attach_down():
    up = kernel_testbed("up", "2", "--full", "--json")
    assert up.returncode == 0, up.stderr
    hosts = json.loads(up.stdout)
    prefix = hosts[0]["bed"]
    try:
        assert [h["mode"] for h in hosts] == ["full", "full"]
        listed = json.loads(kernel_testbed("list", "--json").stdout)
        mine = [h for h in listed if h["bed"] == prefix]
        assert mine == hosts
        assert {h["state"] for h in mine} == {"up"}
        assert set(mine[0]) >= {"name", "address", "mode", "agent_url", "key"}

        # another process drives the hosts the command left running
        bed = Testbed.attach(prefix)
        h = bed.hosts[0]
        with h.client() as agent:
            assert agent.exec("hostname").stdout.strip() == hosts[0]["name"]
        h.cut()
        assert not answers(h)
        h.restore()
        h.wait_ready(10)
        bed.hosts[0].close_clients()

        text = kernel_testbed("list").stdout
        assert hosts[1]["name"] in text and hosts[1]["agent_url"] in text
        run = kernel_testbed("run", hosts[1]["name"], "--", "systemctl", "is-active", "nope")
        assert (run.returncode, run.stdout) == (3, "inactive\n")
    finally:
        down = kernel_testbed("down", prefix)
    assert down.returncode == 0, down.stderr
    assert f"removed {prefix} (2 hosts)" in down.stdout
    assert leftovers(prefix) == []


@pytest.mark.skipif(_unavailable("full") is not None, reason=str(_unavailable("full")))
def test_hosts_without_an_agent_boot_but_run_nothing(full_hosts):
    bed = full_hosts(1, agent=False)
    bed.add_hosts(1, mode="light", agent=True)
    bed.add_hosts(1, mode="light", agent=False)
    bare_full, light, bare_light = bed.hosts
    assert bare_full.run("systemctl is-system-running").stdout.strip() in ("running", "degraded")
    assert bare_full.run("systemctl is-active kernel-agent").stdout.strip() == "inactive"
    assert not answers(bare_full) and not answers(bare_light)
    assert answers(light)
    assert bare_light.run("ip -4 -o addr show dev eth0").stdout.count(bare_light.ip) == 1

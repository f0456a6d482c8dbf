"""Light hosts: a netns with a real agent in it, reached from the root namespace."""

import ipaddress
import json
import os

import pytest

from kernel.exceptions import TestbedError
from kernel.testbed.system import cgroup_procs

from .helpers import answers, eventually


@pytest.fixture(scope="module")
def bed(light_hosts):
    return light_hosts(3)


def test_hosts_answer_on_their_own_address(bed):
    subnet = ipaddress.IPv4Network(bed.subnet)
    assert len({h.ip for h in bed.hosts}) == 3
    for h in bed.hosts:
        assert ipaddress.IPv4Address(h.ip) in subnet
        assert h.agent_url == f"http://{h.ip}:8001"
        assert len(h.key) == 64
        assert h.client().healthz()
        out = h.run("ip -4 -o addr show dev eth0; ip route", check=True).stdout
        assert f"{h.ip}/" in out
        assert "default" not in out  # hosts reach only the test network
        # a route lookup only (no packet is sent): nothing outside the bed is reachable
        assert h.run("ip route get 192.0.2.10").returncode != 0


def test_agent_sees_the_gateway_as_source_address(bed):
    h = bed.hosts[0]
    r = h.client().exec("ss -Htn state established '( sport = :8001 )'")
    assert r.exit_code == 0
    peers = {line.split()[-1].rsplit(":", 1)[0] for line in r.stdout.splitlines()}
    assert peers == {bed.gateway_ip}


def test_agent_refuses_other_hosts_by_address(bed):
    target, other = bed.hosts[0], bed.hosts[1]
    probe = (
        "import json, urllib.request, urllib.error\n"
        f"req = urllib.request.Request({target.agent_url + '/api/v2/info'!r})\n"
        "try:\n"
        "    print(urllib.request.urlopen(req, timeout=5).status)\n"
        "except urllib.error.HTTPError as e:\n"
        "    print(e.code)\n"
    )
    out = other.run(["python3", "-c", probe], check=True).stdout.strip()
    assert out == "403"


def test_each_host_has_its_own_key(bed):
    a, b = bed.hosts[0], bed.hosts[1]
    assert a.key != b.key
    from kernel.agent_client import AgentClient, AgentError

    with AgentClient(a.agent_url, b.key) as wrong, pytest.raises(AgentError) as e:
        wrong.exec("true")
    assert e.value.code == 401


def test_kill_agent_then_restart(bed):
    h = bed.hosts[2]
    pid = h.agent_pid()
    h.kill_agent()
    assert not answers(h)
    h.restart_agent()
    assert h.agent_pid() != pid
    assert h.client().exec("echo back").stdout == "back\n"


def test_freeze_then_thaw(bed):
    h = bed.hosts[2]
    h.freeze()
    assert not answers(h, timeout=0.5)  # the kernel accepts, nobody answers
    h.thaw()
    assert eventually(lambda: answers(h))


def test_cut_then_restore(bed):
    h = bed.hosts[2]
    h.cut()
    assert not answers(h, timeout=0.5)
    assert answers(bed.hosts[1])  # the others are untouched
    h.restore()
    assert eventually(lambda: answers(h, timeout=0.3))


def test_restart_agent_gives_a_new_process(bed):
    h = bed.hosts[2]
    pid = h.agent_pid()
    h.restart_agent()
    assert h.agent_pid() != pid
    assert answers(h)


def test_stop_kills_every_process_then_start(bed):
    h = bed.hosts[2]
    # a run that would outlive the agent on a real server
    h.client().exec("setsid sleep 300 >/dev/null 2>&1 < /dev/null &")
    assert len(cgroup_procs(h.cgroup)) >= 2
    h.stop()
    assert cgroup_procs(h.cgroup) == []
    assert not answers(h)
    with pytest.raises(TestbedError):
        h.agent_pid()
    h.start()
    assert answers(h)


def test_add_hosts_grows_the_bed(bed):
    (new,) = bed.add_hosts(1)
    assert new in bed.hosts and len(bed.hosts) == 4
    assert new.client().healthz()
    state = json.loads((bed.dir / "state.json").read_text())
    assert [h["name"] for h in state["hosts"]] == [h.name for h in bed.hosts]


def test_bad_mode_is_a_clear_error(bed):
    with pytest.raises(TestbedError, match="unknown host mode"):
        bed.add_hosts(1, mode="heavy")


PY38 = "/root/.pyenv/versions/3.8.18/bin/python3.8"


@pytest.mark.skipif(not os.access(PY38, os.X_OK), reason="no Python 3.8 here")
def test_light_agents_can_run_on_another_python(light_hosts, monkeypatch):
    monkeypatch.setenv("KERNEL_TESTBED_PYTHON", PY38)
    bed = light_hosts(1)
    with bed.hosts[0].client() as agent:
        assert agent.info()["python"].startswith("3.8.")

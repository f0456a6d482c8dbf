"""Full hosts: systemd as PID 1 over an overlay root, the agent installed by install.sh."""

from pathlib import Path

import pytest

from kernel.exceptions import TestbedError

from .helpers import answers, eventually

UNIT = "kt-probe.service"


@pytest.fixture(scope="module")
def bed(full_hosts):
    return full_hosts(2)


def test_systemd_is_running(bed):
    for h in bed.hosts:
        state = h.run("systemctl is-system-running").stdout.strip()
        assert state in ("running", "degraded"), h.run("systemctl --failed").stdout


def test_each_host_has_its_own_identity(bed):
    a, b = bed.hosts
    ids = [h.run("hostname; cat /etc/machine-id", check=True).stdout.split() for h in bed.hosts]
    assert ids[0][0] == a.name and ids[1][0] == b.name
    assert ids[0][1] != ids[1][1]
    own = Path("/etc/machine-id")
    if own.exists():
        assert own.read_text().strip() not in (ids[0][1], ids[1][1])


def test_agent_runs_under_systemd_as_kernel_agent_service(bed):
    for h in bed.hosts:
        assert h.run("systemctl is-active kernel-agent").stdout.strip() == "active"
        r = h.client().exec("cat /proc/1/comm; cat /proc/self/cgroup")
        assert r.exit_code == 0
        assert r.stdout.startswith("systemd\n")
        assert "kernel-agent.service" in r.stdout
        assert h.run("systemctl is-enabled kernel-agent").stdout.strip() == "enabled"


def test_agent_sees_the_gateway_as_source_address(bed):
    r = bed.hosts[0].client().exec("ss -Htn state established '( sport = :8001 )'")
    peers = {line.split()[-1].rsplit(":", 1)[0] for line in r.stdout.splitlines()}
    assert peers == {bed.gateway_ip}


def test_a_unit_written_inside_is_invisible_outside(bed):
    a, b = bed.hosts
    unit = "[Service]\nExecStart=/bin/sleep 600\n[Install]\nWantedBy=multi-user.target\n"
    a.run(f"cat > /usr/lib/systemd/system/{UNIT}", input=unit, check=True)
    a.run(f"systemctl daemon-reload && systemctl enable --now {UNIT}", check=True)
    assert a.run(f"systemctl is-active {UNIT}").stdout.strip() == "active"
    assert not Path("/usr/lib/systemd/system", UNIT).exists()
    assert not Path("/etc/systemd/system/multi-user.target.wants", UNIT).exists()
    assert b.run(f"test -e /usr/lib/systemd/system/{UNIT}").returncode == 1
    assert b.run(f"systemctl is-active {UNIT}").stdout.strip() == "inactive"


def test_files_in_root_and_etc_stay_in_their_host(bed):
    a, b = bed.hosts
    a.run(f"echo {a.name} > /root/kt-mark && echo x > /etc/kt-mark", check=True)
    assert a.run("cat /root/kt-mark").stdout.strip() == a.name
    assert b.run("test -e /root/kt-mark || test -e /etc/kt-mark").returncode == 1
    assert not Path("/root/kt-mark").exists() and not Path("/etc/kt-mark").exists()
    # this machine's own enabled units (PostgreSQL, timers) are not started in hosts
    assert "postgres" not in a.run("systemctl list-units --no-legend --state=active").stdout


def test_kill_agent_is_restarted_by_systemd(bed):
    h = bed.hosts[1]
    pid = h.agent_pid()
    h.kill_agent()
    assert eventually(lambda: answers(h) and h.agent_pid() != pid, timeout=20)


def test_freeze_thaw_and_cut_restore(bed):
    h = bed.hosts[1]
    h.freeze()
    assert not answers(h)
    h.thaw()
    assert eventually(lambda: answers(h))
    h.cut()
    assert not answers(h)
    h.restore()
    assert eventually(lambda: answers(h, timeout=0.3))


def test_restart_agent_restarts_the_unit(bed):
    h = bed.hosts[1]
    pid = h.agent_pid()
    h.restart_agent()
    assert h.agent_pid() != pid
    assert h.client().exec("true").exit_code == 0


def test_stop_then_start_keeps_the_hosts_files(bed):
    h = bed.hosts[1]
    h.run("echo kept > /root/kt-reboot", check=True)
    h.stop()
    assert not answers(h)
    with pytest.raises(TestbedError, match="not running"):
        h.run("true")
    h.start()
    assert h.run("cat /root/kt-reboot").stdout.strip() == "kept"
    assert h.client().exec("systemctl is-active kernel-agent").stdout.strip() == "active"


def test_hosts_cannot_change_this_machines_kernel_settings(bed):
    h = bed.hosts[0]
    r = h.run("cat /proc/sys/vm/swappiness > /proc/sys/vm/swappiness")
    assert r.returncode != 0 and "Read-only file system" in r.stderr
    h.run("echo 1 > /proc/sys/net/ipv4/conf/eth0/forwarding", check=True)  # its own netns
    h.run("echo 0 > /proc/sys/net/ipv4/conf/eth0/forwarding", check=True)
    bounding = int(h.run("grep CapBnd /proc/1/status", check=True).stdout.split()[1], 16)
    cap_sys_module, cap_sys_time = 16, 25
    assert not bounding & (1 << cap_sys_module) and not bounding & (1 << cap_sys_time)
    with h.client() as agent:  # the agent (under systemd) has the same bounding set
        assert agent.exec("grep CapBnd /proc/self/status").stdout.split()[1] == f"{bounding:016x}"

"""End to end over full test hosts (systemd, real install.sh): enroll with the one-liner run
inside each host, init scripts in order, a command on all hosts, a cut-off host, and a server
killed (SIGKILL) mid-job."""

from __future__ import annotations

import shlex
import time
from pathlib import Path

import httpx
import pytest

from support.servers import ServerProc

pytestmark = [pytest.mark.testbed, pytest.mark.slow]


def _eventually(fn, timeout=60.0, pause=0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(pause)


def _job_done(api: httpx.Client, job_id: int) -> dict | None:
    job = api.get(f"/api/v1/jobs/{job_id}?output=1").json()
    return job if job["state"] in ("finished", "cancelled") else None


@pytest.fixture(scope="module")
def bed(full_hosts):
    return full_hosts(2, agent=False)  # the agents come from the server's one-liner


def test_full_cycle(bed, tmp_path: Path, db_url):
    data = tmp_path / "srv"
    (data / "init").mkdir(parents=True)
    (data / "init" / "10-first.sh").write_text("echo one > /root/kernel-init-1\n")
    (data / "init" / "20-second.sh").write_text(
        "test -f /root/kernel-init-1 && echo two > /root/kernel-init-2\n"
    )
    server = ServerProc(
        data, db_url, host=bed.gateway_ip, KERNEL_AGENT_NETWORKS=str(bed.record.network)
    )
    server.start()
    try:
        server.login()
        with server.api() as api:
            ids = {}
            for i, h in enumerate(bed.hosts):
                r = api.post("/api/v1/servers", json={"name": h.name, "tags": ["e2e"]})
                assert r.status_code == 201, r.text
                ids[h.name] = r.json()["server"]["id"]
                line = r.json()["enroll"]["command"]
                assert line.startswith(f"curl -fsSL '{server.url}/agent/install.sh?token=")
                assert line.endswith("' | bash")
                if i == 0:  # a root shell on a host without sudo
                    assert h.run("mv /usr/bin/sudo /usr/bin/sudo.hidden").returncode == 0
                    out = h.run(line, timeout=120)
                    h.run("mv /usr/bin/sudo.hidden /usr/bin/sudo")
                else:  # a user who may sudo: the script elevates itself
                    h.run(
                        "useradd -m kop && echo 'kop ALL=(ALL) NOPASSWD:ALL' "
                        "> /etc/sudoers.d/kop && chmod 0440 /etc/sudoers.d/kop"
                    )
                    out = h.run(f"su kop -c {shlex.quote(line)}", timeout=120)
                    assert "running again with sudo" in out.stderr
                assert out.returncode == 0, out.stdout + out.stderr
                assert h.run("systemctl is-active kernel-agent").stdout.strip() == "active"

            # Joined, checked, and both init scripts ran in order.
            def inited() -> bool:
                return all(
                    [s["state"] for s in api.get(f"/api/v1/servers/{i}/init").json()["scripts"]]
                    == ["ok", "ok"]
                    for i in ids.values()
                )

            _eventually(inited)
            for h in bed.hosts:
                assert h.run("cat /root/kernel-init-2").stdout == "two\n"
                srv = api.get(f"/api/v1/servers/{ids[h.name]}").json()
                assert srv["state"] == "online" and srv["agent_url"] == f"http://{h.ip}:8001"
                assert srv["facts"]["systemd"]
            # The token is spent.
            r = api.post(f"/api/v1/servers/{ids[bed.hosts[0].name]}/enroll-token")
            assert r.status_code == 201

            # A command on all hosts.
            job = api.post("/api/v1/jobs", json={"cmd": "hostname", "targets": {"all": True}})
            done = _eventually(lambda: _job_done(api, job.json()["id"]))
            assert {r["stdout"].strip() for r in done["runs"]} == {h.name for h in bed.hosts}

            # One host cut off the network: it ends unreachable, the other is not held up.
            cut = bed.hosts[1]
            cut.cut()
            try:
                t0 = time.monotonic()
                job = api.post("/api/v1/jobs", json={"cmd": "true", "targets": {"tags": ["e2e"]}})
                done = _eventually(lambda: _job_done(api, job.json()["id"]))
                runs = {r["server"]: r for r in done["runs"]}
                assert runs[bed.hosts[0].name]["state"] == "ok"
                assert runs[cut.name]["state"] == "unreachable"
                assert time.monotonic() - t0 < 30
            finally:
                cut.restore()

        # The server killed mid-job: runs re-attach, nothing runs twice.
        with server.api() as api:
            cmd = "echo x >> /root/kernel-runs; sleep 2; echo done"
            job_id = api.post("/api/v1/jobs", json={"cmd": cmd, "targets": {"all": True}}).json()[
                "id"
            ]
            _eventually(
                lambda: all(h.run("cat /root/kernel-runs").stdout == "x\n" for h in bed.hosts),
                timeout=30,
                pause=0.05,
            )
        server.kill()
        server.start()
        with server.api() as api:
            done = _eventually(lambda: _job_done(api, job_id))
        assert [r["state"] for r in done["runs"]] == ["ok", "ok"], done["runs"]
        assert all(r["stdout"] == "done\n" for r in done["runs"])
        for h in bed.hosts:
            assert h.run("cat /root/kernel-runs").stdout == "x\n"
            h.run("rm -f /root/kernel-runs /root/kernel-init-1 /root/kernel-init-2")
    finally:
        server.stop()

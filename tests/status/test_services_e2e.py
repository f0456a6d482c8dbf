"""End to end on full test hosts (systemd PID 1): the real server (create_app served by
Kernel's HTTP server on the testbed gateway) joins the hosts (init scripts run), deploys and
operates services through the API as jobs, and its poller reports what systemd says."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from kernel.server.components import components
from kernel.server.core.datadir import install_examples
from support.api import make_token
from support.procs import wait_for

from .conftest import Served, close_app, make_app

pytestmark = pytest.mark.slow
ORDER_SCRIPT = 'echo "{n}" >> /root/init-order\n'


@pytest.fixture(scope="module")
def bed(full_hosts):
    return full_hosts(3)


def write_service(root: Path, name: str, deploy: str, remove: str, **info: str) -> None:
    d = root / "service" / name
    d.mkdir(parents=True)
    (d / "info.json").write_text(json.dumps({"description": f"test only: {name}", **info}))
    (d / "deploy.sh").write_text(deploy)
    (d / "remove.sh").write_text(remove)


@pytest.fixture(scope="module")
def kernel(bed, tmp_path_factory):
    """The server with its runner and poller, reachable from the hosts; hosts joined."""
    data = tmp_path_factory.mktemp("e2e") / "data"
    install_examples(data, test_only=True)
    for n in (100, 15, 5):  # numeric order, not file-name order: 5, 15, 100
        (data / "init" / f"{n}-order.sh").write_text(ORDER_SCRIPT.format(n=n))
    write_service(
        data,
        "slow",
        "sleep 3\n"
        "printf '[Service]\\nExecStart=/bin/sleep 600\\n' > /etc/systemd/system/slow.service\n"
        "systemctl daemon-reload && systemctl start slow\n",
        "systemctl stop slow; rm -f /etc/systemd/system/slow.service; systemctl daemon-reload\n",
    )
    write_service(data, "nounit", "echo 'installed nothing'\n", "true\n")
    app = make_app(data, STATUS_INTERVAL=2.0, RUN_START_TIMEOUT=3.0)
    served = Served(app, bed.gateway_ip)
    components(app).start()
    admin = served.api(make_token(app, "admin1", "admin"))
    ids = {}
    for h in bed.hosts:
        body = {"name": h.name, "agent_url": h.agent_url, "agent_key": h.key}
        ids[h.name] = admin.post("/api/v1/servers", body, expect=201)["server"]["id"]
    yield served, admin, ids
    admin.client.close()
    served.stop()
    close_app(app)


def finished(api, job_id, timeout=120):
    def done():
        job = api.get(f"/api/v1/jobs/{job_id}?output=1")
        return job if job["state"] in ("finished", "cancelled") else None

    return wait_for(done, timeout, step=0.2)


def operate(api, service, op, hosts, **extra):
    body = {"targets": {"servers": [h.name for h in hosts]}, **extra}
    job = api.post(f"/api/v1/services/{service}/{op}", body, expect=201)
    return {r["server"]: r for r in finished(api, job["id"])["runs"]}


def spread(api, service):
    api.post("/api/v1/status/refresh", expect=202)
    return api.get(f"/api/v1/services/{service}/hosts")


def test_join_runs_init_scripts_in_numeric_order(kernel, bed):
    _served, admin, ids = kernel

    def all_ok():
        for h in bed.hosts:
            recs = admin.get(f"/api/v1/servers/{ids[h.name]}/init")
            recs = recs.get("scripts", recs) if isinstance(recs, dict) else recs
            if not recs or any(r["state"] != "ok" for r in recs):
                return False
        return True

    wait_for(all_ok, 60, step=0.2)
    for h in bed.hosts:
        assert h.run("cat /root/init-order").stdout.split() == ["5", "15", "100"]
        assert "managed by Kernel" in h.run("cat /etc/motd.d/50-kernel").stdout
        assert h.run("id -u kernel-demo").returncode == 0


def test_sums_lifecycle_on_two_hosts(kernel, bed):
    _served, api, _ids = kernel
    two = bed.hosts[:2]
    names = sorted(h.name for h in two)
    runs = operate(api, "sums", "deploy", two)
    assert all(r["state"] == "ok" for r in runs.values()), runs
    for h in two:
        page = wait_for(lambda h=h: _get(f"http://{h.ip}:8081/"), 15)
        assert "<h1>Sums</h1>" in page  # served by the unit, reached from the root namespace
    wait_for(lambda: spread(api, "sums")["active"] == names, 15)
    assert bed.hosts[2].name not in spread(api, "sums")["installed"]

    runs = operate(api, "sums", "status", two)
    assert all("active (running)" in r["stdout"] for r in runs.values())
    runs = operate(api, "sums", "logs", two, lines=5)
    assert all(r["state"] == "ok" for r in runs.values())

    assert all(r["state"] == "ok" for r in operate(api, "sums", "stop", two).values())
    wait_for(lambda: spread(api, "sums")["active"] == [], 15)
    assert spread(api, "sums")["installed"] == names
    for op in ("start", "restart"):
        assert all(r["state"] == "ok" for r in operate(api, "sums", op, two).values())
    wait_for(lambda: spread(api, "sums")["active"] == names, 15)
    for op in ("disable", "enable"):
        assert all(r["state"] == "ok" for r in operate(api, "sums", op, two).values())

    runs = operate(api, "sums", "remove", two)
    assert all(r["state"] == "ok" for r in runs.values()), runs
    wait_for(lambda: spread(api, "sums")["installed"] == [], 15)
    for h in two:
        assert h.run("test -e /root/sums").returncode == 1
        assert h.run("test -e /usr/lib/systemd/system/sums.service").returncode == 1


def test_failing_deploys_report_and_stay_honest(kernel, bed):
    _served, api, ids = kernel
    h = bed.hosts[0]
    run = operate(api, "broken-deploy", "deploy", [h])[h.name]
    assert run["state"] == "failed" and run["exit_code"] == 1
    assert "failing on purpose" in run["stderr"]
    run = operate(api, "nounit", "deploy", [h])[h.name]
    assert run["state"] == "failed" and run["exit_code"] == 97
    assert "installed nothing" in run["stdout"]
    assert "systemd does not know nounit.service" in run["stderr"]
    host = api.get(f"/api/v1/servers/{ids[h.name]}/services")
    states = {s["service"]: s for s in host["services"]}
    assert not states["nounit"]["installed"] and not states["broken-deploy"]["installed"]


def test_frozen_host_times_out_the_others_finish(kernel, bed):
    _served, api, _ids = kernel
    frozen = bed.hosts[2]
    body = {"targets": {"servers": [h.name for h in bed.hosts]}, "timeout": 4}
    job = api.post("/api/v1/services/slow/deploy", body, expect=201)

    def all_running():
        runs = api.get(f"/api/v1/jobs/{job['id']}")["runs"]
        return all(r["state"] == "running" for r in runs)

    wait_for(all_running, 10, step=0.05)
    frozen.freeze()
    try:
        # a second operation on a pair still running is refused
        api.post("/api/v1/services/slow/stop", body, expect=409)
        runs = {r["server"]: r for r in finished(api, job["id"], 90)["runs"]}
    finally:
        frozen.thaw()
    for h in bed.hosts[:2]:
        assert runs[h.name]["state"] == "ok", runs[h.name]
    stuck = runs[frozen.name]
    cleanup = operate(api, "slow", "remove", bed.hosts)
    assert all(r["state"] == "ok" for r in cleanup.values()), cleanup
    assert stuck["state"] == "timed_out", stuck
    assert "stopped answering" in stuck["error"]


def _get(url):
    try:
        r = httpx.get(url, timeout=2)
    except httpx.TransportError:
        return None
    return r.text if r.status_code == 200 else None

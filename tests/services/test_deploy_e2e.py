"""End to end on a full test host (systemd PID 1): the example services deployed through the
real agent, their artifacts downloaded from a real Flask app serving the artifacts blueprint
on the testbed gateway, then operated, probed and removed."""

import json
import threading
import time
from dataclasses import dataclass

import pytest
from flask import Flask
from werkzeug.serving import make_server

from kernel.agent_client import AgentClient
from kernel.server.core import shell
from kernel.server.core.datadir import EXAMPLES_DIR
from kernel.server.core.shell import RemoteCommand
from kernel.server.inventory import initscripts
from kernel.server.services import api as services_api
from kernel.server.services import artifacts, catalog
from kernel.server.services import operations as service_ops
from kernel.server.status.probe import parse_probe, probe_script
from kernel.testbed import Host

EXAMPLES = EXAMPLES_DIR
SECRET = "e2e-secret"


@pytest.fixture(scope="module")
def bed(full_hosts):
    return full_hosts(1)


@pytest.fixture(scope="module")
def kernel_url(bed):
    """A real Flask app with the artifacts blueprint, where the test host can reach it."""
    app = Flask(__name__)
    app.config.update(SECRET_KEY=SECRET, DATA_DIR=str(EXAMPLES))
    app.register_blueprint(services_api.artifacts_bp)
    server = make_server(bed.gateway_ip, 0, app, threaded=True)
    app.config["KERNEL_URL"] = f"http://{bed.gateway_ip}:{server.server_port}"
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield app.config["KERNEL_URL"]
    server.shutdown()
    t.join(5)
    server.server_close()


@dataclass
class Target:
    """The test host and a client for its agent."""

    host: Host
    agent: AgentClient

    @property
    def name(self):
        return self.host.name

    def run(self, cmd, **kw):
        return self.host.run(cmd, **kw)


@pytest.fixture(scope="module")
def host(bed):
    h = bed.hosts[0]
    with h.client(timeout=120) as client:
        yield Target(h, client)


@pytest.fixture(scope="module")
def cat():
    return catalog.scan(EXAMPLES / "service")


def run(host, command: RemoteCommand):
    return host.agent.exec(
        command.cmd, stdin=command.stdin, env=dict(command.env), timeout=command.timeout
    )


def op(host, cat, kernel_url, name, what, now=None, **kw):
    cfg = {"SECRET_KEY": SECRET}
    surl = artifacts.service_url_for(cfg, name, kernel_url=kernel_url, now=now)
    return run(
        host, service_ops.build(what, cat.get(name), kernel_url=kernel_url, service_url=surl, **kw)
    )


def unit_state(host, unit):
    report = parse_probe(run(host, probe_script([unit])).stdout)
    assert report.complete, report.warnings
    return report.units[unit]


def wait_http(host, url, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        r = host.run(f"curl -fsS {url}")
        if r.returncode == 0 or time.monotonic() > deadline:
            return r
        time.sleep(0.2)


def test_sums_lifecycle(host, cat, kernel_url):
    r = op(host, cat, kernel_url, "sums", "deploy")
    assert r.exit_code == 0, r.stderr
    assert "downloading sums.tgz with curl" in r.stdout
    assert "kernel: systemd knows sums.service" in r.stdout
    assert wait_http(host, "'http://127.0.0.1:8081/sum?n=1&n=2'").stdout == "3\n"
    assert "<h1>Sums</h1>" in wait_http(host, "http://127.0.0.1:8081/").stdout
    st = unit_state(host, "sums.service")
    assert (st.installed, st.active, st.unit_file_state) == (True, True, "enabled")

    r = op(host, cat, kernel_url, "sums", "status")
    assert r.exit_code == 0 and "active (running)" in r.stdout
    assert op(host, cat, kernel_url, "sums", "logs", lines=20).exit_code == 0

    assert op(host, cat, kernel_url, "sums", "stop").exit_code == 0
    assert unit_state(host, "sums.service").active_state == "inactive"
    r = op(host, cat, kernel_url, "sums", "status")  # inactive: systemctl says 3, op is fine
    assert r.exit_code == 0 and "inactive (dead)" in r.stdout
    assert op(host, cat, kernel_url, "sums", "start").exit_code == 0
    assert op(host, cat, kernel_url, "sums", "restart").exit_code == 0
    assert unit_state(host, "sums.service").active
    assert op(host, cat, kernel_url, "sums", "disable").exit_code == 0
    assert unit_state(host, "sums.service").unit_file_state == "disabled"
    assert op(host, cat, kernel_url, "sums", "enable").exit_code == 0
    assert unit_state(host, "sums.service").unit_file_state == "enabled"

    r = op(host, cat, kernel_url, "sums", "remove")
    assert r.exit_code == 0, r.stderr
    assert "kernel: sums.service is gone" in r.stdout
    assert not unit_state(host, "sums.service").installed
    assert host.run("test -e /root/sums").returncode == 1
    assert op(host, cat, kernel_url, "sums", "status").exit_code == 4  # no such unit


def test_expired_artifact_url_fails_the_deploy(host, cat, kernel_url):
    r = op(host, cat, kernel_url, "sums", "deploy", now=time.time() - 7200)
    assert r.exit_code != 0
    assert "403" in r.stderr
    assert not unit_state(host, "sums.service").installed


def test_hello_web(host, cat, kernel_url):
    r = op(host, cat, kernel_url, "hello-web", "deploy")
    assert r.exit_code == 0, r.stderr
    page = wait_http(host, "http://127.0.0.1:8080/").stdout
    assert f"Hello from {host.name}" in page and kernel_url in page
    assert op(host, cat, kernel_url, "hello-web", "remove").exit_code == 0
    assert not unit_state(host, "hello-web.service").installed


def test_broken_deploy(host, cat, kernel_url):
    r = op(host, cat, kernel_url, "broken-deploy", "deploy")
    assert r.exit_code == 1 and "failing on purpose" in r.stderr


def test_remove_that_leaves_the_unit_fails(host, tmp_path, kernel_url):
    d = tmp_path / "sticky"
    d.mkdir()
    (d / "info.json").write_text(json.dumps({"description": "test only"}))
    (d / "deploy.sh").write_text(
        "printf '[Service]\\nExecStart=/bin/sleep 600\\n' > /etc/systemd/system/sticky.service\n"
        "systemctl daemon-reload && systemctl start sticky\n"
    )
    (d / "remove.sh").write_text("echo 'forgot to remove anything'\n")
    svc = catalog.scan(tmp_path).get("sticky")
    build = service_ops.build
    assert run(host, build("deploy", svc, kernel_url=kernel_url, service_url="")).exit_code == 0
    r = run(host, build("remove", svc, kernel_url=kernel_url, service_url=""))
    assert r.exit_code == shell.EXIT_UNIT_NOT_GONE
    assert "still has sticky.service (LoadState=loaded, ActiveState=active)" in r.stderr
    host.run(
        "systemctl stop sticky; rm -f /etc/systemd/system/sticky.service; systemctl daemon-reload",
        check=True,
    )


def test_init_scripts_run_in_order_and_twice(host, kernel_url):
    init = initscripts.scan_init(EXAMPLES / "init")
    for _ in range(2):  # idempotent: a retry runs them again
        for script in init.scripts:
            r = run(host, initscripts.init_command(script, kernel_url=kernel_url))
            assert r.exit_code == 0, (script.name, r.stderr)
    assert kernel_url in host.run("cat /etc/motd.d/50-kernel").stdout
    assert host.run("sysctl -n net.core.somaxconn").stdout.strip() == "4096"
    assert host.run("id -u kernel-demo").returncode == 0
    assert "already exists" in r.stdout


@pytest.mark.parametrize("missing", [["curl"], ["curl", "wget"]], ids=["wget", "python3"])
def test_sums_downloads_without_curl(host, cat, kernel_url, missing):
    """The deploy falls back to wget, then to python3 (always there: the agent needs it)."""
    bindir = f"/tmp/no-{'-'.join(missing)}"
    not_these = " ".join(f"! -name {m}" for m in missing)
    host.run(
        f"mkdir -p {bindir} && find /usr/bin -mindepth 1 -maxdepth 1 {not_these} "
        f"-exec ln -sft {bindir} {{}} +",
        check=True,
    )
    surl = artifacts.service_url_for({"SECRET_KEY": SECRET}, "sums", kernel_url=kernel_url)
    cmd = service_ops.build("deploy", cat.get("sums"), kernel_url=kernel_url, service_url=surl)
    env = {**cmd.env, "PATH": f"{bindir}:/usr/sbin:/sbin"}
    r = host.agent.exec(cmd.cmd, stdin=cmd.stdin, env=env, timeout=cmd.timeout)
    assert r.exit_code == 0, r.stderr
    tool = "python3" if "wget" in missing else "wget"
    assert f"downloading sums.tgz with {tool}" in r.stdout
    assert wait_http(host, "'http://127.0.0.1:8081/sum?n=2&n=2'").stdout == "4\n"
    assert op(host, cat, kernel_url, "sums", "remove").exit_code == 0
    host.run(f"rm -rf {bindir}", check=True)

"""Service commands through a real agent on loopback: only what is safe on this machine
(scripts that print and exit, status and logs of a unit that does not exist, the probe)."""

import json
import socket
import subprocess

import pytest

from kernel.server.core import shell
from kernel.server.core.datadir import EXAMPLES_DIR
from kernel.server.inventory import initscripts
from kernel.server.services import catalog
from kernel.server.services import operations as service_ops
from kernel.server.status.probe import parse_probe, probe_script

EXAMPLES = EXAMPLES_DIR
URL = "http://127.0.0.1:9"  # never contacted: these scripts only print it
NO_UNIT = "kernel-test-no-such-unit"


@pytest.fixture
def services(tmp_path):
    """Test-only services whose scripts touch nothing."""

    def make(name, deploy, remove="echo removed\n", unit=None):
        d = tmp_path / name
        d.mkdir()
        info = {"description": "test only"} | ({"unit": unit} if unit else {})
        (d / "info.json").write_text(json.dumps(info))
        (d / "deploy.sh").write_text(deploy)
        (d / "remove.sh").write_text(remove)
        return catalog.scan(tmp_path).get(name)

    return make


def test_script_gets_its_environment_on_stdin(loopback_agent, services):
    svc = services(
        "envtest",
        'echo "url=$KERNEL_URL svc=$KERNEL_SERVICE surl=$KERNEL_SERVICE_URL"; exit 3\n',
    )
    cmd = service_ops.build("deploy", svc, kernel_url=URL, service_url=URL + "/sf/x")
    r = loopback_agent.run(cmd)
    assert r.exit_code == 3  # the script's own failure, passed through; no unit check
    assert r.stdout == f"url={URL} svc=envtest surl={URL}/sf/x\n"


def test_deploy_that_installs_nothing_fails_the_unit_check(loopback_agent, services):
    svc = services("noop", "echo did nothing\n", unit=NO_UNIT)
    r = loopback_agent.run(service_ops.build("deploy", svc, kernel_url=URL, service_url=URL))
    assert r.exit_code == shell.EXIT_UNIT_UNKNOWN
    assert r.stdout == "did nothing\n"
    assert f"kernel: deploy script exited 0 but systemd does not know {NO_UNIT}.service" in r.stderr


def test_broken_deploy_example(loopback_agent):
    svc = catalog.scan(EXAMPLES / "service").get("broken-deploy")
    r = loopback_agent.run(service_ops.build("deploy", svc, kernel_url=URL, service_url=URL))
    assert r.exit_code == 1
    assert "broken-deploy: failing on purpose with exit code 1" in r.stderr


def test_status_of_an_unknown_unit(loopback_agent, services):
    svc = services("ghost", "true\n", unit=NO_UNIT)
    r = loopback_agent.run(service_ops.build("status", svc, kernel_url=URL, service_url=URL))
    # Whatever systemctl says here (no systemd: exit 1; systemd: 4 "could not be found"),
    # the operation fails exactly when systemctl's answer is worse than "not running".
    direct = subprocess.run(
        ["systemctl", "status", "--no-pager", "--", f"{NO_UNIT}.service"], capture_output=True
    )
    assert (r.exit_code == 0) == (direct.returncode <= 3)
    assert r.exit_code in (0, direct.returncode)


def test_logs_of_an_unknown_unit(loopback_agent, services):
    svc = services("ghost", "true\n", unit=NO_UNIT)
    cmd = service_ops.build("logs", svc, kernel_url=URL, service_url=URL, lines=5)
    r = loopback_agent.run(cmd)
    assert r.exit_code == 0, r.stderr


def test_init_script_through_the_agent(loopback_agent, tmp_path):
    (tmp_path / "05-hello.sh").write_text('echo "init $KERNEL_INIT_SCRIPT from $KERNEL_URL"\n')
    (script,) = initscripts.scan_init(tmp_path).scripts
    r = loopback_agent.run(initscripts.init_command(script, kernel_url=URL))
    assert (r.exit_code, r.stdout) == (0, f"init 05-hello.sh from {URL}\n")


def test_probe_through_the_agent(loopback_agent):
    r = loopback_agent.run(probe_script(["sums", "hello-web"]))
    assert r.exit_code == 0, r.stderr
    report = parse_probe(r.stdout)
    assert report.complete
    assert report.facts.hostname == socket.gethostname()
    assert report.metrics.mem_total and report.metrics.load1 is not None

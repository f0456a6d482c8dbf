"""service_ops.py: what each operation sends, and the examples it is used with."""

import shlex
import subprocess

import pytest

from kernel.server.core import shell
from kernel.server.core.datadir import EXAMPLES_DIR
from kernel.server.inventory import initscripts
from kernel.server.services import catalog
from kernel.server.services import operations as service_ops
from kernel.server.services.operations import OperationRefused, build

EXAMPLES = EXAMPLES_DIR
URL = "http://10.0.0.1:8002"
SURL = URL + "/service-files/sums/1/abc"


@pytest.fixture(scope="module")
def cat():
    return catalog.scan(EXAMPLES / "service")


def test_examples_scan_clean(cat):
    assert [s.name for s in cat] == ["broken-deploy", "hello-web", "sums"]
    assert [s.problems for s in cat] == [(), (), ()]
    assert cat.get("hello-web").unit == "hello-web.service"
    assert [a.path for a in cat.get("sums").artifacts] == ["sums.tgz"]


def test_deploy(cat):
    sums = cat.get("sums")
    c = build("deploy", sums, kernel_url=URL, service_url=SURL)
    assert c.stdin == sums.script("deploy.sh").text
    assert dict(c.env) == {"KERNEL_URL": URL, "KERNEL_SERVICE": "sums", "KERNEL_SERVICE_URL": SURL}
    assert c.cmd == shell.run_stdin_script(then=shell.unit_known_check("sums.service"))
    assert c.cmd.startswith("bash -s; ")
    assert (c.title, c.timeout) == ("deploy sums", service_ops.TIMEOUTS["deploy"])


def test_remove(cat):
    c = build("remove", cat.get("sums"), kernel_url=URL, service_url=SURL)
    assert c.stdin == cat.get("sums").script("remove.sh").text
    assert c.cmd == shell.run_stdin_script(then=shell.unit_gone_check("sums.service"))
    assert c.title == "remove sums"


@pytest.mark.parametrize("op", ["start", "stop", "restart", "enable", "disable"])
def test_systemctl_ops(cat, op):
    c = build(op, cat.get("hello-web"), kernel_url=URL, service_url=SURL)
    assert shlex.split(c.cmd) == ["systemctl", op, "--", "hello-web.service"]
    assert c.stdin is None and dict(c.env) == {}
    assert c.title == f"{op} hello-web"


def test_status_and_logs(cat):
    s = cat.get("sums")
    st = build("status", s, kernel_url=URL, service_url=SURL)
    assert st.cmd == shell.systemctl_status("sums")
    logs = build("logs", s, kernel_url=URL, service_url=SURL, lines=30)
    assert shlex.split(logs.cmd) == [
        "journalctl", "--no-pager", "-o", "short-iso", "-n", "30", "-u", "sums.service"
    ]  # fmt: skip
    assert logs.title == "logs sums (30 lines)"
    with pytest.raises(OperationRefused, match="between 1 and 10000"):
        build("logs", s, kernel_url=URL, service_url=SURL, lines=10**6)


def test_unknown_operation(cat):
    with pytest.raises(OperationRefused, match="unknown operation 'reboot'"):
        build("reboot", cat.get("sums"), kernel_url=URL, service_url=SURL)


def test_broken_services_cannot_be_deployed_but_can_be_stopped(tmp_path):
    d = tmp_path / "svc"
    d.mkdir()
    (d / "info.json").write_text('{"description": "d"}')
    (d / "remove.sh").write_text("")
    s = catalog.scan(tmp_path).get("svc")
    for op in ("deploy", "remove"):
        with pytest.raises(
            OperationRefused, match=f"cannot {op} service 'svc': deploy.sh is missing"
        ):
            build(op, s, kernel_url=URL, service_url=SURL)
    assert build("stop", s, kernel_url=URL, service_url=SURL).cmd == "systemctl stop -- svc.service"


def test_bad_names_are_never_built(tmp_path):
    (tmp_path / "a;reboot").mkdir()
    s = catalog.scan(tmp_path).get("a;reboot")
    for op in service_ops.OPERATIONS:
        with pytest.raises(OperationRefused):
            build(op, s, kernel_url=URL, service_url=SURL)


def test_init_command():
    init = initscripts.scan_init(EXAMPLES / "init")
    assert [s.name for s in init.scripts] == ["10-motd.sh", "20-sysctl.sh", "30-user.sh"]
    assert init.problems == ()
    c = initscripts.init_command(init.scripts[0], kernel_url=URL)
    assert (c.cmd, c.stdin, c.title) == ("bash -s", init.scripts[0].text, "init 10-motd.sh")
    assert dict(c.env) == {"KERNEL_URL": URL, "KERNEL_INIT_SCRIPT": "10-motd.sh"}


def test_example_scripts_are_valid_bash():
    scripts = sorted(EXAMPLES.glob("service/*/*.sh")) + sorted(EXAMPLES.glob("init/*.sh"))
    assert len(scripts) == 9
    for s in scripts:
        r = subprocess.run(["bash", "-n", str(s)], capture_output=True, text=True)
        assert r.returncode == 0, (s, r.stderr)


def test_sums_tgz_is_what_build_sums_makes(tmp_path):
    # build-sums.sh writes into its own folder: run a copy.
    work = tmp_path / "examples"
    subprocess.run(["cp", "-a", str(EXAMPLES), str(work)], check=True)
    subprocess.run(["bash", str(work / "build-sums.sh")], check=True, capture_output=True)
    built = (work / "service/sums/sums.tgz").read_bytes()
    assert built == (EXAMPLES / "service/sums/sums.tgz").read_bytes()
    listing = subprocess.run(
        ["tar", "tzf", str(work / "service/sums/sums.tgz")], capture_output=True, text=True
    ).stdout.split()
    assert listing == [
        "sums_pack/",
        "sums_pack/index.html",
        "sums_pack/sums",
        "sums_pack/sums.service",
    ]


def test_broken_deploy_fails_through_the_real_command(cat):
    # Safe on any machine: the script only prints and exits 1; the unit check never runs.
    c = build("deploy", cat.get("broken-deploy"), kernel_url=URL, service_url=SURL)
    r = subprocess.run(["bash", "-c", c.cmd], input=c.stdin, capture_output=True, text=True)
    assert r.returncode == 1
    assert "failing on purpose" in r.stderr and "kernel:" not in r.stderr

"""The console with a full test host (systemd as PID 1): add a server with the one-liner
copied from the page and run inside the host, watch it join and its init scripts finish, see
its facts (a hostname that is an XSS string, as text) and a chart with data, deploy the
example web service and watch its output live, then stop and start it and see the chip
change — all without a reload."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kernel.server.core.datadir import EXAMPLES_DIR

from .conftest import XSS, ServerProc, axe, screenshot

pytestmark = [pytest.mark.testbed, pytest.mark.slow]
HAS_TEXT = "([sel, text]) => (document.querySelector(sel)?.textContent || '').includes(text)"
CHIP = "[data-unit='hello-web.service']"


@pytest.fixture(scope="module")
def bed(full_hosts: Any) -> Any:
    return full_hosts(1, agent=False)  # the agent comes from the console's one-liner


@pytest.fixture(scope="module")
def server(bed: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    data = tmp_path_factory.mktemp("ui-testbed") / "data"
    shutil.copytree(EXAMPLES_DIR / "service" / "hello-web", data / "service" / "hello-web")
    init = data / "init"
    init.mkdir(parents=True)
    (init / "10-motd.sh").write_text("echo 'Managed by Kernel' > /etc/motd; echo motd written\n")
    (init / "20-hostname.sh").write_text("hostname; echo second script\n")
    srv = ServerProc(
        data, host=bed.gateway_ip, KERNEL_AGENT_NETWORKS=str(bed.record.network)
    ).start()
    yield srv
    srv.stop()


def test_join_deploy_operate(bed, server, new_page, tmp_path: Path):
    host = bed.hosts[0]
    w = new_page(server.url, user="tester")
    w.goto("/servers/new")
    form = w.page.locator("#enroll-form")
    form.locator("input[name=name]").fill("tb1")
    form.locator("input[name=tags]").fill("testbed")
    form.locator("button[type=submit]").click()
    line = w.page.locator("#install-line").inner_text()
    assert line.startswith(f"curl -fsSL '{server.url}/agent/install.sh?token=")
    screenshot(w, "server-join-line-en", tmp_path)
    # The host has a hostname made to break a page that would not escape it: it reports it
    # when it joins and in every probe.
    named = host.run(f"python3 -c 'import socket; socket.sethostname(\"{XSS[1]}\")'")
    assert named.returncode == 0, named.stderr
    out = host.run(line, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    w.page.wait_for_selector("#join-progress[data-done=yes]", timeout=90000)
    progress = w.page.locator("#join-progress").inner_text()
    assert "10-motd.sh" in progress and "20-hostname.sh" in progress
    assert "motd written" in progress and "second script" in progress
    assert w.page.locator("#join-progress [data-script] .s-ok").count() == 2
    screenshot(w, "server-joined-en", tmp_path)

    w.page.click("text=Open its page")
    w.page.wait_for_selector("h1:text('tb1')")
    # The hostname the host reports (after its init script set it), as text: no image, no
    # dialog. Facts are as of the page's load: reload until a probe has brought them, and
    # until the chart has a few points.
    facts = w.page.locator("#facts-title + dl")
    for _ in range(60):
        if (
            XSS[1] in facts.inner_text()
            and int(w.page.locator("#charts").get_attribute("data-loaded") or 0) > 1
        ):
            break
        w.page.wait_for_timeout(1000)
        w.page.reload()
        w.page.wait_for_load_state("networkidle")
    assert XSS[1] in facts.inner_text()
    assert w.page.locator("img[src=x]").count() == 0
    assert w.page.locator("#charts canvas").count() >= 4
    assert axe(w) == []

    # Deploy the example web service from the server page: live output, then the chip.
    w.page.select_option("select[name=service]", "hello-web")
    w.page.click("text=Deploy a service")
    w.page.wait_for_function(HAS_TEXT, arg=["#action-output [data-out]", "hello-web deployed"],
                             timeout=120000)  # fmt: skip
    w.page.wait_for_selector(f"{CHIP}.s-active", timeout=30000)
    assert host.run("systemctl is-active hello-web").stdout.strip() == "active"
    screenshot(w, "server-deployed-en", tmp_path)

    row = w.page.locator("tr", has=w.page.locator(CHIP))
    row.locator("button:text-is('Stop')").click()
    assert "hello-web" in w.page.locator("#confirm .confirm-text").inner_text()
    w.page.click("#confirm-ok")
    w.page.wait_for_selector(f"{CHIP}.s-inactive", timeout=30000)
    row.locator("button:text-is('Start')").click()
    w.page.wait_for_selector(f"{CHIP}.s-active", timeout=30000)

    # The dashboard shows it too.
    w.goto("/")
    w.page.wait_for_selector(f"[data-server-id] {CHIP}.s-active")
    screenshot(w, "dashboard-testbed-en", tmp_path)

"""The pinned one-liner end to end (issue 9), inside full test hosts (systemd, the real
install.sh): a ``kernel-server`` behind a TLS terminator with a self-signed certificate on the
test network's gateway; the line the server shows enrolls a host; a line with a wrong pin, or
install.sh given a wrong pin for its own downloads, installs nothing and leaves the token
usable."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from support.procs import wait_for
from support.servers import ServerProc
from support.tlsproxy import TlsProxy, make_cert, openssl_pin

pytestmark = [pytest.mark.testbed, pytest.mark.slow]


@pytest.fixture(scope="module")
def bed(full_hosts):
    return full_hosts(2, agent=False)  # the agents come from the server's one-liner


def nothing_installed(h) -> None:  # type: ignore[no-untyped-def]
    assert h.run("test -e /usr/local/lib/kernel-agent/kernel_agent.py").returncode != 0
    assert h.run("test -e /etc/kernel-agent/agent.key").returncode != 0
    assert h.run("systemctl is-active kernel-agent").stdout.strip() != "active"


def test_pinned_line_enrolls_and_a_wrong_pin_installs_nothing(bed, tmp_path: Path):
    # Once, on SQLite: the pin has nothing to do with the database, and the hosts keep what
    # the line installed.
    cert, key = make_cert(tmp_path, "server", bed.gateway_ip)
    other, _ = make_cert(tmp_path, "other", bed.gateway_ip)
    wrong = openssl_pin(other)
    data = tmp_path / "srv"
    data.mkdir()
    # Kernel on loopback, the terminator on the test network (as nginx would be).
    srv = ServerProc(
        data, None, KERNEL_AGENT_NETWORKS=str(bed.record.network),
        KERNEL_TRUSTED_PROXY="127.0.0.1",
    )  # fmt: skip
    with TlsProxy(cert, key, ("127.0.0.1", srv.port), bed.gateway_ip) as proxy:
        srv.env["KERNEL_URL"] = proxy.url
        srv.start()
        try:
            srv.login()
            with srv.api() as api:
                good, bad = bed.hosts
                lines, ids = {}, {}
                for h in bed.hosts:
                    r = api.post("/api/v1/servers", json={"name": h.name})
                    assert r.status_code == 201, r.text
                    ids[h.name] = r.json()["server"]["id"]
                    lines[h.name] = r.json()["enroll"]["command"]
                pin = openssl_pin(cert)
                assert lines[good.name].startswith(
                    f"curl -fsSL --insecure --pinnedpubkey '{pin}' '{proxy.url}/agent/install.sh?"
                ), lines[good.name]

                # The line as shown: installed, enrolled over the pinned POST, online.
                out = good.run(lines[good.name], timeout=120)
                assert out.returncode == 0, out.stdout + out.stderr
                assert good.run("systemctl is-active kernel-agent").stdout.strip() == "active"
                joined = wait_for(
                    lambda: (s := api.get(f"/api/v1/servers/{ids[good.name]}").json())["state"]
                    == "online" and s, 30,
                )  # fmt: skip
                assert joined["agent_url"] == f"http://{good.ip}:8001"

                # A wrong pin in the line: curl refuses the server, bash is fed nothing.
                line = lines[bad.name].replace(pin, wrong)
                out = bad.run(line, timeout=120)
                assert "(90)" in out.stderr or "pinned" in out.stderr.lower(), out.stderr
                nothing_installed(bad)
                # The script fetched fine, but told a wrong pin for its own downloads.
                out = bad.run(
                    f"KERNEL_TLS_PIN={shlex.quote(wrong)} bash -c {shlex.quote(lines[bad.name])}",
                    timeout=120,
                )
                assert out.returncode != 0
                assert "with the server's TLS pin" in out.stderr, out.stderr
                nothing_installed(bad)
                assert api.get(f"/api/v1/servers/{ids[bad.name]}").json()["state"] == "pending"

                # The token was not spent: the right line still enrolls.
                out = bad.run(lines[bad.name], timeout=120)
                assert out.returncode == 0, out.stdout + out.stderr
                wait_for(
                    lambda: api.get(f"/api/v1/servers/{ids[bad.name]}").json()["state"]
                    == "online", 30,
                )  # fmt: skip
        finally:
            srv.stop()

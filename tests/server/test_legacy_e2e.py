"""Coming from the original Kernel, end to end on full test hosts (systemd inside): each host
runs a stand-in of the Go agent as its service, the real server imports an original checkout,
the printed one-liner replaces the Go agent by Kernel's on port 8001 and joins the host (the
imported init scripts run), an imported service deploys, and uninstall.sh puts the old agent
back."""

from __future__ import annotations

import shlex
from pathlib import Path

import httpx
import pytest

from kernel.testbed import Host
from support.legacy import WEB_PAGE, WEB_PORT, make_checkout
from support.procs import wait_for
from support.servers import ServerProc

pytestmark = [pytest.mark.testbed, pytest.mark.slow]

# What the Go agent did (kernel-agent main.go): /api/ExecCmd on :8001, `cmd` from a form body,
# only from the -s address, the output as {"code", "msg"} (+ "err" when it failed).
GO_AGENT = r"""#!/usr/bin/python3
import http.server, json, subprocess, sys, urllib.parse
args = sys.argv[1:]
server = args[args.index("-s") + 1] if "-s" in args else "222.200.97.179"

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.do_POST()

    def do_POST(self):
        if self.path != "/api/ExecCmd":
            self.send_error(404)
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        if self.client_address[0] != server:
            out = {"code": -1, "msg": "非服务器IP"}
        else:
            cmd = urllib.parse.parse_qs(body).get("cmd", [""])[0]
            p = subprocess.run(["bash", "-c", cmd], stdout=subprocess.PIPE)
            out = {"code": 1 if p.returncode else 0, "msg": p.stdout.decode()}
            if p.returncode:
                out["err"] = "exit status %d" % p.returncode
        data = (json.dumps(out) + "\n").encode()
        self.send_response(200)
        self.send_header("X-Stand-In", "go-agent")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *a):
        pass

http.server.HTTPServer(("", 8001), Handler).serve_forever()
"""
UNIT = """[Unit]
Description=kernel-server
After=network.target

[Service]
User=root
ExecStart={exe} -s {server}

[Install]
WantedBy=multi-user.target
"""
# Shares the binary's name but is no Go agent (it listens elsewhere): left alone.
DECOY = GO_AGENT.replace('("", 8001)', '("", 8009)')


@pytest.fixture(scope="module")
def bed(full_hosts):
    return full_hosts(2, agent=False)


def install_go_agent(h: Host, unit: str, unit_dir: str, server: str) -> None:
    """As the original's static/agent/install.sh did (unit name and folder as given)."""
    h.run("cat > /usr/sbin/kernel && chmod 0755 /usr/sbin/kernel", input=GO_AGENT, check=True)
    text = UNIT.format(exe="/usr/sbin/kernel", server=server)
    h.run(f"cat > {unit_dir}/{unit}", input=text, check=True)
    h.run(f"systemctl daemon-reload && systemctl enable --now {unit}", check=True)


def legacy_exec(h: Host, cmd: str) -> httpx.Response:
    """What the original server's Machine.exec_cmd sent (requests.get with a form body)."""
    return wait_for(lambda: _post(h, cmd), 20, step=0.2)


def _post(h: Host, cmd: str) -> httpx.Response | None:
    try:
        return httpx.request("GET", f"http://{h.ip}:8001/api/ExecCmd", data={"cmd": cmd})
    except httpx.TransportError:
        return None


def service_state(h: Host, unit: str) -> tuple[str, str]:
    active = h.run(f"systemctl is-active {unit}").stdout.strip()
    enabled = h.run(f"systemctl is-enabled {unit}").stdout.strip()
    return active, enabled or "not-found"


def finished(api: httpx.Client, job_id: int) -> dict | None:
    job = api.get(f"/api/v1/jobs/{job_id}?output=1").json()
    return job if job["state"] in ("finished", "cancelled") else None


def test_from_the_original_to_kernel_and_back(bed, tmp_path: Path, db_url: str) -> None:
    one, two = bed.hosts
    gw = bed.gateway_ip
    for h in bed.hosts:  # the hosts are the module's: an earlier run (SQLite) ran the script
        h.run("rm -f /root/legacy-init-1", check=True)
    # The seed's host one with its unit as the brief tells it (kernel.service); host two as
    # the original's install.sh made it: /usr/lib/systemd/system/kernel-agent.service, the
    # very name Kernel's agent uses.
    install_go_agent(one, "kernel.service", "/etc/systemd/system", gw)
    install_go_agent(two, "kernel-agent.service", "/usr/lib/systemd/system", gw)
    one.run("mkdir -p /opt/decoy && cat > /opt/decoy/kernel && chmod 0755 /opt/decoy/kernel",
            input=DECOY, check=True)  # fmt: skip
    one.run("cat > /etc/systemd/system/decoy.service", check=True,
            input=UNIT.format(exe="/opt/decoy/kernel", server=gw))  # fmt: skip
    one.run("systemctl daemon-reload && systemctl start decoy", check=True)
    for h in bed.hosts:
        r = legacy_exec(h, "hostname")
        assert r.json() == {"code": 0, "msg": h.name + "\n"} and r.headers["X-Stand-In"]

    checkout = make_checkout(
        tmp_path / "kernel-server", {h.name: f"http://{h.ip}:8001" for h in bed.hosts}
    )
    data = tmp_path / "data"
    data.mkdir()
    server = ServerProc(data, db_url, host=gw, KERNEL_AGENT_NETWORKS=str(bed.record.network))
    server.start()
    try:
        server.login()
        out = server.cli("import-legacy", str(checkout))
        commands = {}
        for h in bed.hosts:
            lines = out.splitlines()
            at = lines.index(
                f"  + {h.name} (http://{h.ip}:8001): added as a pending server (tag legacy)"
            )
            commands[h.name] = lines[at + 2].strip()
        # The line the import points out, written in place of the hard-coded download.
        deploy = data / "service/legacy-web/deploy.sh"
        lines = out.splitlines()
        at = next(i for i, line in enumerate(lines) if "write instead:" in line)
        old, new = lines[at - 1].strip(), lines[at + 1].strip()
        deploy.write_text(deploy.read_text().replace(old, new))

        with server.api() as api:
            # Asked to leave the Go agent alone: refused before anything changes, on its port
            # (one) and under the name of Kernel's own unit (two).
            keep = "| KERNEL_AGENT_REPLACE_LEGACY=0 KERNEL_AGENT_LISTEN=0.0.0.0:8011 bash"
            for h, refusal in (
                (one, "holds port 8001"),
                (two, "the name of Kernel's own unit: it cannot stay beside it"),
            ):
                line = commands[h.name].replace("| bash", keep)
                if h is one:
                    line = line.replace(" KERNEL_AGENT_LISTEN=0.0.0.0:8011", "")
                res = h.run(line, timeout=60)
                assert res.returncode == 1 and refusal in res.stderr, res.stderr
                assert h.run("test -e /etc/kernel-agent").returncode == 1
            assert service_state(one, "kernel.service") == ("active", "enabled")
            assert service_state(two, "kernel-agent.service") == ("active", "enabled")
            # Host one runs the line the import printed, keeping the original server's way in
            # (legacy_allow_ips = its -s address); host two the seed's own one-liner, which
            # prints a fresh key: the pending server is then given its URL and that key.
            seed_line = f"curl -sL {server.url}/static/agent/install.sh | bash"
            said = {}
            for h, line in (
                (one, commands[one.name].replace("| bash", "| KERNEL_AGENT_LEGACY_API=1 bash")),
                (two, seed_line),
            ):
                res = h.run(line, timeout=180)
                assert res.returncode == 0, res.stdout + res.stderr
                said[h.name], said[h.name + ":stdout"] = res.stderr, res.stdout
                assert "replacing the original Kernel agent" in res.stderr
                assert h.run("systemctl is-active kernel-agent").stdout.strip() == "active"

            # One: the old unit stopped, disabled, its file and binary kept; the decoy is untouched.
            assert service_state(one, "kernel.service")[0] in ("inactive", "unknown")
            saved = "/var/lib/kernel-agent/legacy/kernel.service"
            assert one.run(f"cmp {saved}/binary /usr/sbin/kernel").returncode == 0
            assert (
                one.run(f"grep -q 'ExecStart=/usr/sbin/kernel -s {gw}' {saved}/unit").returncode
                == 0
            )
            assert one.run("test -e /etc/systemd/system/kernel.service").returncode == 1
            assert "decoy.service runs a binary named kernel but does not listen" in said[one.name]
            assert service_state(one, "decoy.service")[0] == "active"
            # Two: the same-named old unit is gone from /usr/lib; kernel-agent.service is Kernel's.
            assert two.run("test -e /usr/lib/systemd/system/kernel-agent.service").returncode == 1
            assert "kernel_agent" in two.run("systemctl cat kernel-agent.service").stdout
            assert (
                two.run("test -f /var/lib/kernel-agent/legacy/kernel-agent.service/unit").returncode
                == 0
            )

            # Both joined at the old address and port.
            ids = {s["name"]: s["id"] for s in api.get("/api/v1/servers").json()["servers"]}
            key = said[two.name + ":stdout"].strip()
            r = api.patch(
                f"/api/v1/servers/{ids[two.name]}",
                json={"agent_url": f"http://{two.ip}:8001", "agent_key": key},
            )
            assert r.status_code == 200, r.text
            for h in bed.hosts:
                srv = api.get(f"/api/v1/servers/{ids[h.name]}").json()
                assert srv["state"] == "online" and srv["agent_url"] == f"http://{h.ip}:8001"

            def inited() -> bool:
                return all(
                    [
                        (s["state"], s.get("job_id"))
                        for s in api.get(f"/api/v1/servers/{i}/init").json()["scripts"]
                    ]
                    == [("ok", None), ("ok", None)]
                    for i in ids.values()
                )

            # The original's init scripts count as run (the original ran them); one on demand.
            assert inited()
            for h in bed.hosts:
                assert h.run("test -e /root/legacy-init-1").returncode == 1
            job = api.post(f"/api/v1/servers/{ids[one.name]}/init", json={"script": "01-first.sh"})
            assert job.status_code == 202, job.text
            assert wait_for(lambda: finished(api, job.json()["job_id"]), 60)["state"] == "finished"
            assert one.run("cat /root/legacy-init-1").stdout == "one\n"

            # The original server's call still works on host one, from its address only.
            r = legacy_exec(one, "echo still here")
            assert r.json() == {"code": 0, "msg": "still here\n"} and "X-Stand-In" not in r.headers
            assert legacy_exec(two, "true").status_code == 404  # legacy off there

            # The imported service deploys (its artifact from $KERNEL_SERVICE_URL) and runs.
            assert api.post("/api/v1/services/refresh").status_code == 200
            job = api.post(
                "/api/v1/services/legacy-web/deploy",
                json={"targets": {"servers": [h.name for h in bed.hosts]}},
            )
            assert job.status_code == 201, job.text
            done = wait_for(lambda: finished(api, job.json()["id"]), 120, step=0.3)
            assert [r["state"] for r in done["runs"]] == ["ok", "ok"], done["runs"]
            for h in bed.hosts:
                page = wait_for(lambda h=h: _get(f"http://{h.ip}:{WEB_PORT}/"), 15)
                assert page == WEB_PAGE

        # Back: uninstall with the restore option puts the Go agent back on 8001.
        uninstall = f"curl -fsSL {shlex.quote(server.url + '/agent/uninstall.sh')}"
        res = one.run(f"{uninstall} | KERNEL_AGENT_RESTORE_LEGACY=1 bash", timeout=120)
        assert res.returncode == 0, res.stderr
        assert "restored the original Kernel agent kernel.service" in res.stderr
        assert service_state(one, "kernel.service") == ("active", "enabled")
        assert one.run("test -e /var/lib/kernel-agent").returncode == 1
        r = legacy_exec(one, "hostname")
        assert r.json() == {"code": 0, "msg": one.name + "\n"} and r.headers["X-Stand-In"]

        # Without it the copy stays (and says so); a second run with it restores.
        res = two.run(f"{uninstall} | bash", timeout=120)
        assert res.returncode == 0, res.stderr
        assert "is kept in /var/lib/kernel-agent/legacy" in res.stderr
        assert two.run("ls /var/lib/kernel-agent").stdout.split() == ["legacy"]
        assert service_state(two, "kernel-agent.service")[1] == "not-found"
        res = two.run(f"{uninstall} | KERNEL_AGENT_RESTORE_LEGACY=1 bash", timeout=120)
        assert res.returncode == 0, res.stderr
        assert service_state(two, "kernel-agent.service") == ("active", "enabled")
        assert "ExecStart=/usr/sbin/kernel" in two.run("systemctl cat kernel-agent.service").stdout
        r = legacy_exec(two, "hostname")
        assert r.json() == {"code": 0, "msg": two.name + "\n"} and r.headers["X-Stand-In"]
    finally:
        server.stop()


def _get(url: str) -> str | None:
    try:
        r = httpx.get(url, timeout=2)
    except httpx.TransportError:
        return None
    return r.text if r.status_code == 200 else None

"""Enrollment (ARCHITECTURE.md §3): tokens, the served scripts, POST /agent/enroll, init."""

from __future__ import annotations

import datetime as dt
import hashlib
import subprocess
import time
from pathlib import Path

from kernel.server.components import components
from kernel.server.models.servers import EnrollToken
from support.api import wait_job


def _pending(admin, name="new1"):
    out = admin.post("/api/v1/servers", {"name": name}, expect=201)
    return out["server"], out["enroll"]["token"]


def _set_key(app, server_id, key):
    from kernel.server.models.servers import Server

    with components(app).db.session() as s:
        s.get(Server, server_id).agent_key = key


def test_served_files(app, admin):
    client = app.test_client()
    agent = client.get("/agent/kernel-agent.py").data
    assert agent.startswith(b"#!") and b"def main" in agent
    assert client.get("/static/agent/kernel").data == agent
    plain = client.get("/static/agent/install.sh").get_data(as_text=True)
    assert "KERNEL_AGENT_SHA256=" + hashlib.sha256(agent).hexdigest() in plain
    assert "KERNEL_ENROLL_TOKEN" not in plain.split("\n", 5)[2]
    assert client.get("/agent/uninstall.sh").status_code == 200
    _srv, token = _pending(admin)
    script = client.get(f"/agent/install.sh?token={token}").get_data(as_text=True)
    head = script.split("\n", 10)
    assert script.startswith("#!/usr/bin/env bash\n")
    assert any(f"KERNEL_ENROLL_TOKEN={token}" in line for line in head)
    assert any("KERNEL_AGENT_CONF='allow_ips = 127.0.0.1'" in line for line in head)
    assert subprocess.run(["bash", "-n"], input=script.encode()).returncode == 0
    assert client.get("/agent/install.sh?token=nope").status_code == 403


def test_install_defaults_are_shell_quoted(app, admin, tmp_path: Path):
    app.config["URL"] = "http://x'$(touch " + str(tmp_path / "pwned") + ")'"
    script = app.test_client().get("/static/agent/install.sh").get_data(as_text=True)
    head = "\n".join(script.split("\n")[:6]) + '\necho "$KERNEL_URL"\n'
    out = subprocess.run(["bash"], input=head.encode(), capture_output=True)
    assert not (tmp_path / "pwned").exists()
    assert b"$(touch" in out.stdout


def test_enroll_joins_and_runs_init_scripts_in_order(app, admin, runner, agents):
    init = Path(app.config["DATA_DIR"]) / "init"
    init.mkdir()
    (init / "10-first.sh").write_text("echo one\n")
    (init / "20-second.sh").write_text('echo "two $KERNEL_INIT_SCRIPT"\nexit 4\n')
    (init / "30-third.sh").write_text("echo three\n")
    (a,) = agents(1)
    srv, token = _pending(admin)
    _set_key(app, srv["id"], a.key)
    client = app.test_client()
    env = {"REMOTE_ADDR": a.ip}
    r = client.post(
        "/agent/enroll", json={"token": token, "port": a.port, "hostname": "h1"}, environ_base=env
    )
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["agent_url"] == a.url
    # Twice: refused, nothing changes.
    r2 = client.post("/agent/enroll", json={"token": token, "port": a.port}, environ_base=env)
    assert r2.status_code == 409 and "already been used" in r2.get_json()["message"]
    # The chain runs 10, then 20 fails and stops it.
    sid = srv["id"]
    job_id = r.get_json()["init_job_id"]
    wait_job(admin, job_id)
    for _ in range(200):
        st = admin.get(f"/api/v1/servers/{sid}/init")["scripts"]
        if st[0]["state"] == "failed" or st[1]["state"] not in ("not_run", "queued", "running"):
            break
        time.sleep(0.05)
    assert [x["state"] for x in st] == ["ok", "failed", "not_run"], st
    assert st[1]["exit_code"] == 4
    server = admin.get(f"/api/v1/servers/{sid}")
    assert server["state"] == "init_failed" and "20-second.sh" in server["last_error"]
    assert server["facts"]["hostname"] == "h1"
    # Retry continues from the failed script.
    (init / "20-second.sh").write_text("echo fixed\n")
    out = admin.post(f"/api/v1/servers/{sid}/init", {}, expect=202)
    assert out["script"] == "20-second.sh"
    for _ in range(200):
        st = admin.get(f"/api/v1/servers/{sid}/init")["scripts"]
        if [x["state"] for x in st] == ["ok", "ok", "ok"]:
            break
        time.sleep(0.05)
    assert [x["state"] for x in st] == ["ok", "ok", "ok"]
    assert admin.get(f"/api/v1/servers/{sid}")["state"] == "online"
    admin.post(f"/api/v1/servers/{sid}/init", {}, expect=409)  # nothing left
    # A script added later runs on demand.
    (init / "40-later.sh").write_text("echo later\n")
    st = admin.get(f"/api/v1/servers/{sid}/init")["scripts"]
    assert st[-1]["state"] == "not_run"
    out = admin.post(f"/api/v1/servers/{sid}/init", {"script": "40-later.sh"}, expect=202)
    job = wait_job(admin, out["job_id"])
    assert job["runs"][0]["stdout"] == "later\n" and job["kind"] == "init"


def test_enroll_refusals_write_nothing(app, admin, agents):
    (a,) = agents(1)
    client = app.test_client()
    env = {"REMOTE_ADDR": a.ip}
    srv, token = _pending(admin)
    # The agent does not answer with this server's key: refused, token still usable.
    r = client.post("/agent/enroll", json={"token": token, "port": a.port}, environ_base=env)
    assert r.status_code == 502
    assert admin.get(f"/api/v1/servers/{srv['id']}")["state"] == "pending"
    # Nobody listening.
    r = client.post("/agent/enroll", json={"token": token, "port": 9}, environ_base=env)
    assert r.status_code == 502
    # A token for another record.
    r = client.post(
        "/agent/enroll", json={"token": token, "port": a.port, "server": "other"}, environ_base=env
    )
    assert r.status_code == 409 and "new1" in r.get_json()["message"]
    # Garbage.
    for body in (
        {"token": 5},
        {"token": "x", "port": 0},
        {"token": "x", "port": "http"},
        {"port": 1},
        {"token": "x", "extra": 1},
        [],
        "x",
    ):
        r = client.post("/agent/enroll", json=body, environ_base=env)
        assert r.status_code == 400, body
    r = client.post("/agent/enroll", json={"token": "ke_unknown", "port": a.port})
    assert r.status_code == 403
    # Expired.
    with components(app).db.session() as s:
        for t in s.query(EnrollToken).all():
            t.expires_at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    _set_key(app, srv["id"], a.key)
    r = client.post("/agent/enroll", json={"token": token, "port": a.port}, environ_base=env)
    assert r.status_code == 410
    assert admin.get(f"/api/v1/servers/{srv['id']}")["state"] == "pending"
    # Superseded by a newer token.
    new = admin.post(f"/api/v1/servers/{srv['id']}/enroll-token", expect=201)["enroll"]["token"]
    r = client.post("/agent/enroll", json={"token": token, "port": a.port}, environ_base=env)
    assert r.status_code == 403
    # Removed server.
    admin.delete(f"/api/v1/servers/{srv['id']}")
    r = client.post("/agent/enroll", json={"token": new, "port": a.port}, environ_base=env)
    assert r.status_code == 403

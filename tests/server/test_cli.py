"""The kernel-server command: db upgrade, create-user, and the local agent of `make run`."""

from __future__ import annotations

import subprocess
import time

import httpx
import pytest

from support.procs import free_port
from support.servers import ServerProc


def test_db_upgrade_and_create_user(server_proc):
    assert "database is at revision 0" in server_proc.cli("db", "upgrade")
    out = server_proc.cli("create-user", "ann", "--role", "viewer")
    assert "created viewer 'ann'" in out and "password: " in out
    with pytest.raises(subprocess.CalledProcessError) as e:
        server_proc.cli("create-user", "ann", "--role", "viewer")
    assert b"exists" in e.value.stderr and b"Traceback" not in e.value.stderr
    for args, stdin in (
        (["bad name", "--role", "viewer"], ""),
        (["bob", "--role", "king"], ""),
        (["bob", "--role", "viewer", "--password-stdin"], "short\n"),
    ):
        with pytest.raises(subprocess.CalledProcessError) as e:
            server_proc.cli("create-user", *args, stdin=stdin)
        assert b"Traceback" not in e.value.stderr


def test_first_start_prints_admin_password_once(server_proc):
    server_proc.start()
    server_proc.stop()
    log = (server_proc.data_dir / "server.log").read_text()
    assert log.count("created user 'admin' with password:") == 1
    password = log.split("with password: ")[1].split()[0]
    server_proc.start()
    r = httpx.post(
        server_proc.url + "/api/v1/auth/token", json={"username": "admin", "password": password}
    )
    assert r.status_code == 201
    server_proc.stop()
    assert (server_proc.data_dir / "server.log").read_text().count("with password:") == 1


@pytest.mark.slow
def test_local_agent_makes_a_one_machine_cluster(tmp_path, db_url):
    data = tmp_path / "srv"
    data.mkdir()
    port = free_port("127.0.0.1")
    server = ServerProc(
        data,
        db_url,
        KERNEL_LOCAL_AGENT="true",
        KERNEL_LOCAL_AGENT_LISTEN=f"127.0.0.1:{port}",
        KERNEL_LOCAL_AGENT_NAME="thismachine",
    )
    try:
        server.start()
        server.login()
        with server.api() as api:
            deadline = time.monotonic() + 20
            while True:
                servers = api.get("/api/v1/servers").json()["servers"]
                if servers:
                    break
                assert time.monotonic() < deadline
                time.sleep(0.1)
            assert servers[0]["name"] == "thismachine" and servers[0]["state"] == "online"
            job = api.post("/api/v1/jobs", json={"cmd": "echo hi", "targets": {"all": True}})
            job_id = job.json()["id"]
            while api.get(f"/api/v1/jobs/{job_id}").json()["state"] != "finished":
                assert time.monotonic() < deadline + 10
                time.sleep(0.05)
            run = api.get(f"/api/v1/jobs/{job_id}?output=1").json()["runs"][0]
            assert (run["state"], run["stdout"]) == ("ok", "hi\n")
    finally:
        server.stop()
    # Stopping the server stopped its agent.
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)

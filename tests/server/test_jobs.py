"""Jobs over real agent processes on loopback: fan-out, results, failures, cancel, rerun."""

from __future__ import annotations

import time

from kernel.server.components import components
from support.api import wait_job

from .conftest import add_agent_server


def test_command_on_all_servers(admin, runner, agents):
    a, b = agents(2)
    add_agent_server(admin, a, "alpha", ["web"])
    add_agent_server(admin, b, "beta", ["db"])
    job = admin.post(
        "/api/v1/jobs",
        {"cmd": "echo hello; echo err >&2; exit 3", "targets": {"all": True}},
        expect=201,
    )
    assert {r["server"] for r in job["runs"]} == {"alpha", "beta"}
    done = wait_job(admin, job["id"])
    assert done["state"] == "finished"
    for run in done["runs"]:
        assert run["state"] == "failed"
        assert run["exit_code"] == 3
        assert run["stdout"] == "hello\n"
        assert run["stderr"] == "err\n"
        assert run["finished_at"] and run["started_at"]
    assert done["summary"]["failed"] == 2
    # The command and its outcome are in the audit log.
    entries = admin.get("/api/v1/audit")["entries"]
    created = next(e for e in entries if e["action"] == "job.create")
    assert created["hosts"] == ["alpha", "beta"] and created["result"] == "ok"
    assert created["detail"]["cmd"].startswith("echo hello")
    ended = next(e for e in entries if e["action"] == "job.finished")
    assert ended["target"] == f"job {job['id']}" and ended["result"] == "finished failed=2"


def test_targets_by_tag_and_name(admin, runner, agents):
    a, b = agents(2)
    add_agent_server(admin, a, "alpha", ["web"])
    add_agent_server(admin, b, "beta", ["db"])
    job = admin.post("/api/v1/jobs", {"cmd": "true", "targets": {"tags": ["web"]}}, expect=201)
    assert [r["server"] for r in job["runs"]] == ["alpha"]
    job = admin.post("/api/v1/jobs", {"cmd": "true", "targets": {"servers": ["beta"]}}, expect=201)
    assert [r["server"] for r in job["runs"]] == ["beta"]
    assert wait_job(admin, job["id"])["runs"][0]["state"] == "ok"
    err = admin.post("/api/v1/jobs", {"cmd": "true", "targets": {"servers": ["nope"]}}, expect=400)
    assert "nope" in err["message"]


def test_script_on_stdin_with_env(admin, runner, agents):
    (a,) = agents(1)
    add_agent_server(admin, a, "alpha")
    job = admin.post(
        "/api/v1/jobs",
        {"cmd": "bash -s", "stdin": 'echo "x=$X"\n', "env": {"X": "42"}, "targets": {"all": True}},
        expect=201,
    )
    run = wait_job(admin, job["id"])["runs"][0]
    assert (run["state"], run["stdout"]) == ("ok", "x=42\n")


def test_dead_and_frozen_hosts_do_not_delay_others(admin, runner, agents):
    good, dead, frozen = agents(3)
    add_agent_server(admin, good, "good")
    add_agent_server(admin, dead, "dead")
    add_agent_server(admin, frozen, "frozen")
    dead.kill()
    frozen.freeze()
    job = admin.post("/api/v1/jobs", {"cmd": "echo hi", "targets": {"all": True}}, expect=201)
    done = wait_job(admin, job["id"])
    frozen.thaw()
    runs = {r["server"]: r for r in done["runs"]}
    assert runs["dead"]["state"] == "unreachable"
    assert runs["frozen"]["state"] == "unreachable"
    assert "did not start" in runs["frozen"]["error"]
    # The good host was not held up by the frozen one's start timeout.
    assert runs["good"]["finished_at"] < runs["frozen"]["finished_at"]
    servers = {s["name"]: s for s in admin.get("/api/v1/servers")["servers"]}
    assert servers["dead"]["state"] == "offline"
    assert servers["good"]["state"] == "online"


def test_timeout_ends_as_timed_out(admin, runner, agents):
    (a,) = agents(1)
    add_agent_server(admin, a, "alpha")
    job = admin.post(
        "/api/v1/jobs", {"cmd": "sleep 30", "timeout": 0.5, "targets": {"all": True}}, expect=201
    )
    run = wait_job(admin, job["id"], timeout=20)["runs"][0]
    assert run["state"] == "timed_out"


def test_cancel_and_rerun(admin, runner, agents):
    a, b = agents(2)
    add_agent_server(admin, a, "alpha")
    add_agent_server(admin, b, "beta")
    job = admin.post("/api/v1/jobs", {"cmd": "sleep 30", "targets": {"all": True}}, expect=201)
    deadline = time.monotonic() + 10
    while any(r["state"] != "running" for r in admin.get(f"/api/v1/jobs/{job['id']}")["runs"]):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    admin.post(f"/api/v1/jobs/{job['id']}/cancel")
    done = wait_job(admin, job["id"], timeout=20)
    assert done["state"] == "cancelled"
    assert {r["state"] for r in done["runs"]} == {"cancelled"}
    admin.post(f"/api/v1/jobs/{job['id']}/cancel", expect=409)
    again = admin.post(f"/api/v1/jobs/{job['id']}/rerun", expect=201)
    assert again["parent_id"] == job["id"]
    assert {r["server"] for r in again["runs"]} == {"alpha", "beta"}
    admin.post(f"/api/v1/jobs/{again['id']}/cancel")
    wait_job(admin, again["id"], timeout=20)


def test_output_is_capped(admin, app, runner, agents):
    components(app).runner.agent.cap = 1000
    (a,) = agents(1)
    add_agent_server(admin, a, "alpha")
    job = admin.post(
        "/api/v1/jobs",
        {"cmd": "head -c 5000 /dev/zero | tr '\\0' x", "targets": {"all": True}},
        expect=201,
    )
    run = wait_job(admin, job["id"])["runs"][0]
    assert run["state"] == "ok"
    assert run["truncated"] is True
    assert len(run["stdout"]) == 1000


def test_a_frozen_host_does_not_run_a_command_reported_unreachable(admin, runner, agents, tmp_path):
    # Frozen before it took the request: the run ends unreachable ("did not start"); when the
    # host thaws, the request and the runner's hang-up are both waiting in its socket, and the
    # agent must not run what Kernel has already reported as not run.
    (frozen,) = agents(1)
    add_agent_server(admin, frozen, "frozen")
    marker = tmp_path / "ran-after-thaw"
    frozen.freeze()
    try:
        job = admin.post(
            "/api/v1/jobs", {"cmd": f"touch {marker}", "targets": {"all": True}}, expect=201
        )
        run = wait_job(admin, job["id"])["runs"][0]
    finally:
        frozen.thaw()
    assert run["state"] == "unreachable" and "did not start" in run["error"]
    time.sleep(1.0)
    assert not marker.exists()
    again = admin.post("/api/v1/jobs", {"cmd": "echo back", "targets": {"all": True}}, expect=201)
    assert wait_job(admin, again["id"])["runs"][0]["stdout"] == "back\n"

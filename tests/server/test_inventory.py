"""Servers: add by URL + key (checked first), pending with an install command, edit, remove."""

from __future__ import annotations

from support.agents import self_signed_cert
from support.api import wait_job

from .conftest import add_agent_server


def test_add_by_url_and_key_stores_facts(admin, agents):
    (a,) = agents(1)
    srv = add_agent_server(admin, a, "web1", ["web", "eu"])
    assert srv["state"] == "online"
    assert srv["tags"] == ["eu", "web"]
    facts = srv["facts"]
    assert facts["bash"] and facts["os"] and facts["disk_free_kb"] > 0
    assert facts["agent"]["protocol"] == 2
    assert "agent_key" not in srv


def test_add_errors_leave_nothing_behind(admin, agents):
    (a,) = agents(1)
    add_agent_server(admin, a, "web1")
    cases = [
        ({"name": "web1"}, 409),  # duplicate name
        ({"name": "bad name"}, 400),
        ({"name": "x", "agent_url": "ftp://127.0.0.1:1", "agent_key": a.key}, 400),
        ({"name": "x", "agent_url": "http://127.0.0.1:8001/path", "agent_key": a.key}, 400),
        ({"name": "x", "agent_url": "http://10.1.2.3:8001", "agent_key": a.key}, 400),  # fence
        ({"name": "x", "agent_url": a.url, "agent_key": "0" * 64}, 502),  # wrong key
        ({"name": "x", "agent_url": a.url, "agent_key": "zz"}, 400),
        ({"name": "x", "agent_url": "http://127.0.0.1:9", "agent_key": a.key}, 502),  # no answer
        ({"name": "x", "agent_key": a.key}, 400),
        ({"name": "x", "color": "red"}, 400),
    ]
    for body, status in cases:
        err = admin.post("/api/v1/servers", body, expect=status)
        assert set(err) >= {"error", "message"}, err
    names = [s["name"] for s in admin.get("/api/v1/servers")["servers"]]
    assert names == ["web1"]


def test_pending_server_gets_install_command(admin):
    out = admin.post("/api/v1/servers", {"name": "new1", "tags": ["db"]}, expect=201)
    assert out["server"]["state"] == "pending"
    cmd = out["enroll"]["command"]
    assert cmd.startswith("curl -fsSL '") and "/agent/install.sh?token=ke_" in cmd
    assert cmd.endswith("| bash")
    again = admin.post(f"/api/v1/servers/{out['server']['id']}/enroll-token", expect=201)
    assert again["enroll"]["token"] != out["enroll"]["token"]
    # A job cannot target a server that has not joined.
    err = admin.post("/api/v1/jobs", {"cmd": "true", "targets": {"servers": ["new1"]}}, expect=400)
    assert "not joined" in err["message"]


def test_edit_and_remove_keeps_history(admin, runner, agents):
    a, b = agents(2)
    srv = add_agent_server(admin, a, "web1")
    add_agent_server(admin, b, "web2")
    sid = srv["id"]
    admin.patch(f"/api/v1/servers/{sid}", {"name": "web2"}, expect=409)
    edited = admin.patch(
        f"/api/v1/servers/{sid}", {"name": "front", "description": "d", "tags": ["x"]}
    )
    assert (edited["name"], edited["description"], edited["tags"]) == ("front", "d", ["x"])
    admin.patch(f"/api/v1/servers/{sid}", {"agent_url": b.url}, expect=502)  # key mismatch
    admin.patch(f"/api/v1/servers/{sid}", {"agent_url": b.url, "agent_key": b.key})
    job = admin.post("/api/v1/jobs", {"cmd": "true", "targets": {"all": True}}, expect=201)
    wait_job(admin, job["id"])
    admin.delete(f"/api/v1/servers/{sid}")
    assert [s["name"] for s in admin.get("/api/v1/servers")["servers"]] == ["web2"]
    job2 = admin.post("/api/v1/jobs", {"cmd": "true", "targets": {"all": True}}, expect=201)
    assert [r["server"] for r in job2["runs"]] == ["web2"]
    old = admin.get(f"/api/v1/jobs/{job['id']}")
    assert "front" in [r["server"] for r in old["runs"]]
    removed = admin.get("/api/v1/servers?removed=1")["servers"]
    assert any(s["name"] == "front" and s["removed_at"] for s in removed)
    # The name is free again.
    add_agent_server(admin, a, "front")
    audit = admin.get("/api/v1/audit")["entries"]
    actions = [e["action"] for e in audit]
    assert {"server.create", "server.edit", "server.remove", "job.create"} <= set(actions)
    created = next(e for e in audit if e["action"] == "job.create")
    assert created["hosts"] and created["detail"]["cmd"] == "true"
    wait_job(admin, job2["id"])


def test_https_agent_is_pinned_on_first_use(admin, runner, agents, tmp_path):
    cert, key = self_signed_cert(tmp_path, "one")
    (a,) = agents(1, "--tls-cert", cert, "--tls-key", key)
    srv = add_agent_server(admin, a, "tls1")
    assert srv["agent_url"].startswith("https://") and len(srv["tls_fingerprint"]) == 64
    job = admin.post("/api/v1/jobs", {"cmd": "echo ok", "targets": {"all": True}}, expect=201)
    assert wait_job(admin, job["id"])["runs"][0]["state"] == "ok"
    # The agent comes back with another certificate: runs refuse to talk to it.
    a.stop()
    a.extra = ("--tls-cert", *self_signed_cert(tmp_path, "two"))
    a.extra = ("--tls-cert", a.extra[1], "--tls-key", a.extra[2])
    a.start()
    job = admin.post("/api/v1/jobs", {"cmd": "echo ok", "targets": {"all": True}}, expect=201)
    run = wait_job(admin, job["id"])["runs"][0]
    assert run["state"] == "unreachable" and "pin" in run["error"].lower(), run
    # A wrong pin given explicitly is refused up front; nothing is written.
    err = admin.post(
        "/api/v1/servers",
        {"name": "tls2", "agent_url": a.url, "agent_key": a.key, "tls_fingerprint": "ab" * 32},
        expect=502,
    )
    assert "pin" in err["message"].lower() or "fingerprint" in err["message"].lower(), err
    admin.post(
        "/api/v1/servers",
        {
            "name": "x",
            "agent_url": "http://127.0.0.1:1",
            "agent_key": a.key,
            "tls_fingerprint": "ab" * 32,
        },
        expect=400,
    )


def test_server_list_pages_and_filters(admin):
    # Pending servers need no agent: 23 of them, tagged in turn, listed 5 at a time.
    for i in range(23):
        tags = ["even"] if i % 2 == 0 else ["odd", "even-not"]
        admin.post("/api/v1/servers", {"name": f"node{i:02d}", "tags": tags}, expect=201)
    pages = admin.pages("/api/v1/servers?limit=5")
    assert all(answer["total"] == 23 for answer in pages)
    seen = [s["name"] for answer in pages for s in answer["servers"]]
    assert seen == [f"node{i:02d}" for i in range(23)] and len(pages) == 5
    everything = admin.get("/api/v1/servers")
    assert len(everything["servers"]) == 23 and everything["next"] is None
    # A tag is matched whole ("even" is not in "even-not"), in SQL, so pages stay full.
    even = admin.get("/api/v1/servers?tag=even&limit=4")
    assert even["total"] == 12 and len(even["servers"]) == 4 and even["next"]
    assert all("even" in s["tags"] for s in even["servers"])
    assert admin.get("/api/v1/servers?q=DE1")["total"] == 10  # node10..node19, any case
    assert admin.get("/api/v1/servers?q=%25")["total"] == 0  # a LIKE wildcard is a character
    assert admin.get("/api/v1/servers?state=pending")["total"] == 23
    assert admin.get("/api/v1/servers?state=online")["total"] == 0
    for bad in ("limit=0", "limit=1001", "after=nonsense", "after=WzEsMl0", "state=happy"):
        err = admin.get(f"/api/v1/servers?{bad}", expect=400)
        assert set(err) >= {"error", "message"}, (bad, err)

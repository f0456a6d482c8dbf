"""The catalogue and service operations through the API, without hosts: listing, problems,
refresh, names refused before any shell, jobs created with the right command, 409."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kernel.server.components import components
from kernel.server.core.datadir import install_examples
from kernel.server.models.jobs import Job

from .conftest import EXAMPLES, add_server, close_app, make_app


@pytest.fixture
def app(tmp_path: Path, db_url):
    data = tmp_path / "data"
    install_examples(data, test_only=True)
    app = make_app(data, URL="http://kernel.test:8002", DATABASE_URL=db_url)
    yield app
    close_app(app)


@pytest.fixture
def op(as_role):
    return as_role("operator")


def services(api) -> dict:
    return {s["name"]: s for s in api.get("/api/v1/services")["services"]}


def test_catalogue_lists_examples(as_role):
    got = services(as_role("viewer"))
    assert set(got) == {"broken-deploy", "hello-web", "sums"}
    sums = got["sums"]
    assert sums["deployable"] and sums["problems"] == [] and sums["unit"] == "sums.service"
    assert sums["installed"] == sums["active"] == sums["failed"] == []
    one = as_role("viewer").get("/api/v1/services/sums")
    assert set(one["scripts"]) == {"deploy.sh", "remove.sh"}
    assert any(a["path"] == "sums.tgz" for a in one["artifacts"])


def test_refresh_rescans_and_lists_exact_problems(app, op):
    svc = Path(app.config["DATA_DIR"]) / "service"
    assert "bad name" not in services(op)
    (svc / "bad name").mkdir()
    (svc / "noinfo").mkdir()
    (svc / "noinfo" / "deploy.sh").write_text("true\n")
    (svc / "noinfo" / "remove.sh").write_text("true\n")
    shutil.copytree(svc / "hello-web", svc / "badjson")
    (svc / "badjson" / "info.json").write_text('{"description": "x",,}')
    shutil.copytree(svc / "hello-web", svc / "noscript")
    (svc / "noscript" / "deploy.sh").unlink()
    assert "noinfo" not in services(op)  # cached until refreshed
    got = {s["name"]: s for s in op.post("/api/v1/services/refresh")["services"]}
    assert got["bad name"]["problems"] == [
        "service name 'bad name' is not allowed: names must match "
        "^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$"
    ]
    assert got["noinfo"]["problems"] == ["info.json is missing"]
    assert got["badjson"]["problems"][0].startswith("info.json is not valid JSON: ")
    assert got["noscript"]["problems"] == ["deploy.sh is missing"]
    for name in ("bad name", "noinfo", "badjson", "noscript"):
        assert not got[name]["deployable"]
    sid = add_server(app, "h1", "http://127.0.0.1:9", "ab" * 32)
    assert sid
    for name in ("noinfo", "badjson", "noscript"):
        err = op.post(f"/api/v1/services/{name}/deploy", {"targets": {"all": True}}, expect=400)
        assert f"cannot deploy service {name!r}" in err["message"]
    # stop needs only a valid unit: a service without deploy.sh can still be stopped
    op.post("/api/v1/services/noscript/stop", {"targets": {"all": True}}, expect=201)


@pytest.mark.parametrize("name", ["a;b", "-rf", "..", "a b", "x" * 65, "$(reboot)", "é"])
def test_bad_names_refused_before_any_shell(app, op, name):
    add_server(app, "h1", "http://127.0.0.1:9", "ab" * 32)
    from urllib.parse import quote

    err = op.post(
        f"/api/v1/services/{quote(name, safe='')}/deploy",
        {"targets": {"all": True}},
        expect=400,
    )
    assert "is not allowed" in err["message"]
    with components(app).db.session() as s:
        assert s.query(Job).count() == 0


def test_dotdot_path_refused(app, op):
    add_server(app, "h1", "http://127.0.0.1:9", "ab" * 32)
    for path in ("../x", "..%2Fx", "a/../b"):
        resp = op.call(
            "POST", f"/api/v1/services/{path}/deploy", None, json={"targets": {"all": True}}
        )
        assert resp.status_code in (400, 404), path
        assert resp.status_code != 201
    with components(app).db.session() as s:
        assert s.query(Job).count() == 0


def test_deploy_job_carries_script_env_and_check(app, op):
    add_server(app, "h1", "http://127.0.0.1:9", "ab" * 32)
    add_server(app, "h2", "http://127.0.0.1:9", "cd" * 32)
    job = op.post("/api/v1/services/sums/deploy", {"targets": {"all": True}}, expect=201)
    assert job["kind"] == "service" and job["meta"]["service"] == "sums"
    assert job["title"] == "deploy sums" and job["has_stdin"]
    assert job["env"] == ["KERNEL_SERVICE", "KERNEL_SERVICE_URL", "KERNEL_URL"]
    assert [r["server"] for r in job["runs"]] == ["h1", "h2"]
    with components(app).db.session() as s:
        row = s.get(Job, job["id"])
        assert row.env["KERNEL_URL"] == "http://kernel.test:8002"
        assert row.env["KERNEL_SERVICE_URL"].startswith(
            "http://kernel.test:8002/service-files/sums/"
        )
        assert (
            "LoadState" in row.cmd
            and row.stdin == (EXAMPLES / "service/sums/deploy.sh").read_text()
        )


def test_second_operation_on_same_pair_is_409(app, op):
    add_server(app, "h1", "http://127.0.0.1:9", "ab" * 32)
    add_server(app, "h2", "http://127.0.0.1:9", "cd" * 32)
    first = op.post("/api/v1/services/sums/deploy", {"targets": {"servers": ["h1"]}}, expect=201)
    err = op.post("/api/v1/services/sums/stop", {"targets": {"all": True}}, expect=409)
    assert err["error"] == "conflict" and err["busy"] == {"h1": first["id"]}
    assert "h1 (job" in err["message"]
    # another server, or another service on the same server, is free
    op.post("/api/v1/services/sums/stop", {"targets": {"servers": ["h2"]}}, expect=201)
    op.post("/api/v1/services/hello-web/start", {"targets": {"servers": ["h1"]}}, expect=201)
    # when the job ends (cancelled here), the pair is free again
    op.post(f"/api/v1/jobs/{first['id']}/cancel")
    op.post("/api/v1/services/sums/stop", {"targets": {"servers": ["h1"]}}, expect=201)


def test_service_job_is_not_replayed_by_rerun(app, op):
    # a rerun would skip the one-operation-per-pair lock and reuse an expiring artifact URL
    add_server(app, "h1", "http://127.0.0.1:9", "ab" * 32)
    job = op.post("/api/v1/services/sums/deploy", {"targets": {"all": True}}, expect=201)
    op.post(f"/api/v1/jobs/{job['id']}/cancel")
    err = op.post(f"/api/v1/jobs/{job['id']}/rerun", expect=409)
    assert "service job" in err["message"] and "/api/v1/services/" in err["message"]


def test_logs_lines_and_timeout(app, op):
    add_server(app, "h1", "http://127.0.0.1:9", "ab" * 32)
    job = op.post("/api/v1/services/sums/logs", {"targets": {"all": True}, "lines": 7}, expect=201)
    assert "-n 7" in job["cmd"]
    op.post(f"/api/v1/jobs/{job['id']}/cancel")
    job = op.post(
        "/api/v1/services/sums/status", {"targets": {"all": True}, "timeout": 5}, expect=201
    )
    assert job["timeout"] == 5


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        "x",
        {},
        {"targets": {}},
        {"targets": {"all": True}, "extra": 1},
        {"targets": {"servers": "h1"}},
        {"targets": {"servers": ["nope"]}},
        {"targets": {"all": True}, "lines": 5},
        {"targets": {"all": True}, "timeout": 0},
        {"targets": {"all": True}, "timeout": "1"},
        {"targets": {"all": "yes"}},
    ],
)
def test_garbage_bodies_are_400(app, op, body):
    add_server(app, "h1", "http://127.0.0.1:9", "ab" * 32)
    resp = op.call(
        "POST",
        "/api/v1/services/sums/start",
        None,
        data=json.dumps(body) if body is not None else b"{bad",
    )
    assert resp.status_code == 400, resp.text
    assert set(resp.json()) >= {"error", "message"}


@pytest.mark.parametrize("lines", [0, 10001, 1.5, True, "7"])
def test_bad_lines(app, op, lines):
    add_server(app, "h1", "http://127.0.0.1:9", "ab" * 32)
    op.post("/api/v1/services/sums/logs", {"targets": {"all": True}, "lines": lines}, expect=400)


def test_unknown_service_and_op(app, op):
    add_server(app, "h1", "http://127.0.0.1:9", "ab" * 32)
    op.post("/api/v1/services/nope/start", {"targets": {"all": True}}, expect=404)
    op.post("/api/v1/services/sums/explode", {"targets": {"all": True}}, expect=404)
    op.get("/api/v1/services/nope", expect=404)


def test_roles(as_role):
    viewer = as_role("viewer")
    viewer.get("/api/v1/services")
    viewer.post("/api/v1/services/refresh", expect=403)
    viewer.post("/api/v1/services/sums/status", {"targets": {"all": True}}, expect=403)

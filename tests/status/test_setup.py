"""The services and status areas in the app: routes guarded and documented, migration in step
with the models, one migration head, the poller among the background services, examples
copied."""

from __future__ import annotations

import re
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from kernel.server.components import components
from kernel.server.core.db import Base
from kernel.server.models.migrate import alembic_config
from kernel.server.web.access import unguarded_endpoints

from .conftest import close_app, make_app

OURS = ("services.", "status.")


def test_routes_are_guarded_and_in_openapi(app, as_role):
    assert unguarded_endpoints(app) == []
    doc = as_role("viewer").get("/api/v1/openapi.json")
    ours = {
        re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        for rule in app.url_map.iter_rules()
        if rule.endpoint.startswith(OURS)
    }
    assert len(ours) >= 10
    assert ours <= set(doc["paths"]), ours - set(doc["paths"])


def test_models_match_migrations(tmp_path: Path, db_url):
    app = make_app(tmp_path / "data", DATABASE_URL=db_url)
    engine = components(app).db.engine
    with engine.connect() as c:
        diff = compare_metadata(MigrationContext.configure(c), Base.metadata)
    assert diff == []
    names = set(Base.metadata.tables)
    assert {"host_status", "metric_samples"} <= names
    close_app(app)


def test_single_migration_head(app):
    cfg = alembic_config(components(app).db.engine)
    assert len(ScriptDirectory.from_config(cfg).get_heads()) == 1


def test_the_poller_is_a_background_service(app):
    parts = components(app)
    runner, scheduler, poller = parts.runner, parts.scheduler, parts.poller
    assert parts.background == [parts.membership, runner, scheduler, poller]
    assert not poller.running
    parts.start()
    assert poller.running and runner.running and scheduler.running
    parts.stop()
    assert not poller.running and not runner.running and not scheduler.running


def test_poller_stays_off_under_testing_unless_asked(tmp_path: Path):
    app = make_app(tmp_path / "data", STATUS_POLLER=None)
    try:
        components(app).start()
        assert not components(app).poller.running
    finally:
        close_app(app)


def test_refresh_without_a_running_poller_says_so(as_role):
    got = as_role("operator").post("/api/v1/status/refresh", expect=202)
    assert got == {"refreshing": False, "message": "the poller is not running in this process"}
    status = as_role("viewer").get("/api/v1/status")
    assert status["hosts"] == [] and status["poller"]["running"] is False


def test_examples_copied_into_a_new_data_dir_only(tmp_path: Path):
    data = tmp_path / "data"
    app = make_app(data, INSTALL_EXAMPLES=True)
    close_app(app)
    assert (data / "service" / "sums" / "deploy.sh").is_file()
    assert not (data / "service" / "broken-deploy").exists()  # test only
    assert (data / "init" / "10-motd.sh").is_file()
    (data / "service" / "sums" / "deploy.sh").write_text("mine\n")
    close_app(make_app(data, INSTALL_EXAMPLES=True))
    assert (data / "service" / "sums" / "deploy.sh").read_text() == "mine\n"
    other = tmp_path / "testing"
    close_app(make_app(other))  # TESTING: no examples unless asked
    assert not (other / "service").exists()


def test_status_comes_in_pages(app, as_role):
    """GET /api/v1/status pages as GET /api/v1/servers does: name order, ``limit``,
    ``after=<next>``, ``total`` over every page; pending and removed servers are not in it;
    garbage paging arguments are a 400."""
    from kernel.server.core.db import utcnow
    from kernel.server.models.servers import Server

    with components(app).db.session() as s:
        for i in range(23):
            s.add(Server(name=f"h{i:02d}", agent_url=f"http://127.0.0.1:{1000 + i}",
                         agent_key="ab" * 32, state="online"))  # fmt: skip
        s.add(Server(name="pending1", agent_key="ab" * 32))
        s.add(Server(name="gone", agent_url="http://127.0.0.1:9", agent_key="ab" * 32,
                     removed_at=utcnow()))  # fmt: skip
    viewer = as_role("viewer")
    pages = viewer.pages("/api/v1/status?limit=5")
    for answer in pages:
        assert answer["total"] == 23 and "poller" in answer and "replicas" in answer
        assert all(h["state"] == "unknown" for h in answer["hosts"])  # never probed
    seen = [h["server"] for answer in pages for h in answer["hosts"]]
    assert seen == [f"h{i:02d}" for i in range(23)] and len(pages) == 5
    whole = viewer.get("/api/v1/status")
    assert len(whole["hosts"]) == 23 and whole["total"] == 23 and whole["next"] is None
    for bad in ("limit=0", "limit=1001", "limit=x", "after=nonsense", "after=WzEsMl0",
                "after=%FF%FE", "after=" + "a" * 300):  # fmt: skip
        err = viewer.get(f"/api/v1/status?{bad}", expect=400)
        assert set(err) >= {"error", "message"}, (bad, err)

"""The app factory, configuration, migrations, errors, the audit log's append-only rule."""

from __future__ import annotations

import re

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from kernel.server.app import create_app
from kernel.server.components import components
from kernel.server.core.db import Base, make_engine
from kernel.server.models.migrate import alembic_config, current_revision, upgrade
from support.servers import app_config


def test_config_order_defaults_file_env_test(tmp_path, monkeypatch):
    data = tmp_path / "d"
    data.mkdir()
    (data / "kernel.cfg").write_text("JOB_CONCURRENCY = 7\nURL = 'https://file.example'\n")
    monkeypatch.setenv("KERNEL_URL", "https://env.example/")
    monkeypatch.setenv("KERNEL_DATA_DIR", str(data))
    app = create_app()
    assert app.config["JOB_CONCURRENCY"] == 7  # file over default
    assert app.config["URL"] == "https://env.example"  # env over file
    assert (data / "kernel.db").exists() and (data / "secret_key").exists()
    app2 = create_app({"URL": "http://test"})
    assert app2.config["URL"] == "http://test"
    assert app.config["SECRET_KEY"] == app2.config["SECRET_KEY"]  # persisted once
    for a in (app, app2):
        components(a).db.dispose()


def test_sqlite_is_wal_with_foreign_keys(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.connect() as c:
        assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert c.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert c.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    engine.dispose()


def test_migrations_match_models(empty_db_url):
    engine = make_engine(empty_db_url)
    upgrade(engine)
    with engine.connect() as c:
        diff = compare_metadata(MigrationContext.configure(c), Base.metadata)
    engine.dispose()
    assert diff == []


def head_revision(engine):
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(engine)).get_current_head()


def test_upgrade_from_first_migration_keeps_rows(empty_db_url):
    engine = make_engine(empty_db_url)
    upgrade(engine, "0001")
    assert current_revision(engine) == "0001"
    with engine.begin() as c:
        c.execute(
            text(
                "INSERT INTO users (name, password_hash, role, disabled, created_at) "
                "VALUES ('old', 'h', 'admin', false, CURRENT_TIMESTAMP)"
            )
        )
        c.execute(
            text(
                "INSERT INTO servers (name, agent_url, agent_key, description, tags, state, facts, "
                "created_at) VALUES ('web1', 'http://127.0.0.1:8001', :k, 'd', '[\"a\"]', "
                "'online', '{}', CURRENT_TIMESTAMP)"
            ),
            {"k": "0" * 64},
        )
    upgrade(engine)
    assert current_revision(engine) == head_revision(engine)
    with engine.connect() as c:
        assert c.execute(text("SELECT name, role FROM users")).all() == [("old", "admin")]
        row = c.execute(text("SELECT name, agent_url, tls_fingerprint FROM servers")).one()
        assert tuple(row) == ("web1", "http://127.0.0.1:8001", None)
        assert c.execute(text("SELECT count(*) FROM init_records")).scalar() == 0
    engine.dispose()


def test_audit_log_is_append_only(app, admin):
    admin.post("/api/v1/tokens", {"name": "x"}, expect=201)
    engine = components(app).db.engine
    for stmt in ("UPDATE audit_log SET result = 'forged'", "DELETE FROM audit_log"):
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as c:
            c.execute(text(stmt))
    entries = admin.get("/api/v1/audit")["entries"]
    assert entries[0]["action"] == "token.create" and entries[0]["actor"] == "admin1"
    assert entries[0]["source"] == "127.0.0.1" and entries[0]["result"] == "ok"


def test_errors_are_json_never_tracebacks(app, admin):
    client = app.test_client()
    r = client.get("/nope")
    assert r.status_code == 404 and r.get_json()["error"] == "not_found"
    r = client.put("/healthz")
    assert r.status_code == 405 and set(r.get_json()) == {"error", "message"}
    for body in (b"{", b"[]", b"null", b"\xff\xfe", b'{"cmd": 1}'):
        r = admin.call("POST", "/api/v1/jobs", data=body, content_type="application/json")
        assert r.status_code == 400, body
        assert set(r.get_json()) == {"error", "message"}
    r = admin.call("GET", "/api/v1/jobs?limit=abc")
    assert r.status_code == 400
    r = admin.call("GET", "/api/v1/jobs/99999999999999999999999")
    assert r.status_code == 404


def test_healthz_and_openapi(app):
    client = app.test_client()
    assert client.get("/healthz").data == b"ok\n"
    doc = client.get("/api/v1/openapi.json").get_json()
    assert doc["openapi"].startswith("3.")
    documented = set(doc["paths"])
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/v1/") and rule.rule != "/api/v1/openapi.json":
            path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
            assert path in documented, path


def test_postgres_url_selects_postgres(tmp_path, db_url):
    app = create_app(app_config(tmp_path, db_url))
    engine = components(app).db.engine
    assert engine.dialect.name == ("sqlite" if db_url.startswith("sqlite") else "postgresql")
    components(app).db.dispose()


def test_root_sends_browsers_to_login_and_api_clients_to_the_api(app):
    client = app.test_client()
    browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    r = client.get("/", headers={"Accept": browser})
    assert r.status_code == 302 and r.headers["Location"] == "/login"
    for accept in ("application/json", "*/*", None):
        r = client.get("/", headers={"Accept": accept} if accept else {})
        assert r.status_code == 200 and r.get_json()["api"] == "/api/v1", accept

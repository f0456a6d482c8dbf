"""Issue 9's server items with a database in them: a used data dir never starts a new
installation on an empty or replaced database; a damaged database is one clear line; agent
keys are sealed at rest; server names are unique whatever their case and trailing dots."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from kernel.exceptions import ConfigError
from kernel.server.app import create_app
from kernel.server.components import components
from kernel.server.core.sealing import PREFIX, Keyring
from kernel.server.models.migrate import upgrade
from support.servers import KERNEL_SERVER, app_config


def server_cli(data: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("KERNEL_")}
    environ.update(KERNEL_DATA_DIR=str(data), KERNEL_INSTALL_EXAMPLES="false", **env)
    return subprocess.run(
        [str(KERNEL_SERVER), *args], env=environ, capture_output=True, text=True, timeout=60
    )


def test_an_emptied_kernel_db_is_refused_not_a_new_installation(tmp_path):
    data = tmp_path / "data"
    first = server_cli(data, "create-user", "ops", "--role", "admin")
    assert first.returncode == 0, first.stderr
    (data / "kernel.db").write_bytes(b"")  # emptied (a full disk, a bad restore, a mistake)
    for argv in (["db", "upgrade"], ["create-user", "x", "--role", "admin"]):
        again = server_cli(data, *argv)
        assert again.returncode != 0
        assert "the database" in again.stderr and "has been used before" in again.stderr
        assert "Traceback" not in again.stderr


def test_a_database_of_another_installation_is_refused(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        assert server_cli(d, "create-user", "ops", "--role", "admin").returncode == 0
    (a / "kernel.db").write_bytes((b / "kernel.db").read_bytes())  # the wrong backup
    out = server_cli(a, "db", "upgrade")
    assert out.returncode != 0 and "do not go together" in out.stderr, out.stderr


def test_a_damaged_database_is_one_clear_line(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "kernel.db").write_bytes(b"this is not a database" * 100)
    out = server_cli(data, "db", "upgrade")
    assert out.returncode != 0
    assert "cannot use the database" in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_a_database_from_before_installation_ids_is_adopted(tmp_path, empty_db_url):
    data = tmp_path / "data"
    data.mkdir()
    (data / "secret_key").write_text("old\n")  # used before, by a version without ids
    engine = create_engine(empty_db_url)
    upgrade(engine, "0003")
    with engine.begin() as c:
        c.execute(text("INSERT INTO users (name, password_hash, role, disabled, created_at) "
                       "VALUES ('old', 'h', 'admin', false, CURRENT_TIMESTAMP)"))  # fmt: skip
        c.execute(
            text(
                "INSERT INTO servers (name, agent_url, agent_key, description, tags, state, "
                "facts, created_at) VALUES ('Web1.', 'http://127.0.0.1:9', :k, '', '[]', "
                "'online', '{}', CURRENT_TIMESTAMP)"
            ),
            {"k": "0a" * 32},
        )
    engine.dispose()
    app = create_app(app_config(tmp_path, empty_db_url))
    try:
        assert (data / "installation").read_text().strip()
        with components(app).db.engine.connect() as c:
            stored, key = c.execute(text("SELECT agent_key, name_key FROM servers")).one()
        assert stored.startswith(PREFIX) and "0a" * 32 not in stored  # sealed at the start
        assert key == "web1"
        from kernel.server.models.servers import Server

        with components(app).db.session() as s:
            (srv,) = s.query(Server).all()
            assert srv.agent_key == "0a" * 32  # read back through the column type
    finally:
        components(app).close()


def test_agent_keys_are_sealed_and_need_the_key_file(tmp_path, db_url, agents):
    app = create_app(app_config(tmp_path, db_url))
    (agent,) = agents(1)
    try:
        from support.api import Api, make_token

        admin = Api(app.test_client(), make_token(app, "admin1", "admin"))
        admin.post(
            "/api/v1/servers",
            {"name": "h1", "agent_url": agent.url, "agent_key": agent.key},
            expect=201,
        )
        with components(app).db.engine.connect() as c:
            raw = c.execute(text("SELECT agent_key FROM servers")).scalar()
        assert raw.startswith(PREFIX) and agent.key not in raw
        components(app).runner.start()
        job = admin.post("/api/v1/jobs", {"cmd": "echo sealed", "targets": {"all": True}},
                         expect=201)  # fmt: skip
        from support.api import wait_job

        run = wait_job(admin, job["id"])["runs"][0]
        assert (run["state"], run["stdout"]) == ("ok", "sealed\n"), (run, agent.log)
    finally:
        components(app).close()
    # Without its key file, the sealed keys cannot be opened: one clear error, not garbage.
    other = Keyring.from_file(tmp_path / "other.key")
    with pytest.raises(ConfigError, match="SEALING_KEY_FILE"):
        other.open(raw)
    (tmp_path / "data" / "sealing.key").write_text("not hex\n")
    with pytest.raises(ConfigError, match="sealing key file"):
        create_app(app_config(tmp_path, db_url))


@pytest.mark.parametrize("twin", ["WEB1", "web1.", "Web1..", "wEb1"])
def test_names_that_differ_in_case_or_a_trailing_dot_are_the_same(admin, twin):
    admin.post("/api/v1/servers", {"name": "web1"}, expect=201)
    err = admin.post("/api/v1/servers", {"name": twin}, expect=409)
    assert "exists" in err["message"]
    other = admin.post("/api/v1/servers", {"name": "web2"}, expect=201)["server"]
    admin.patch(f"/api/v1/servers/{other['id']}", {"name": twin}, expect=409)
    admin.patch(f"/api/v1/servers/{other['id']}", {"name": "Web2"}, expect=200)  # itself

"""Several servers on one database (docs/replicas.md): each must hold the installation's keys."""

from __future__ import annotations

import shutil

import pytest

from kernel.exceptions import ConfigError
from kernel.server.app import create_app
from kernel.server.components import components
from support.servers import app_config


def test_a_replica_needs_the_installations_keys(tmp_path, db_url):
    first = create_app(app_config(tmp_path / "a", db_url))
    parts = components(first)
    parts.membership.start()  # running: its heartbeat is in the database
    try:
        with pytest.raises(ConfigError, match="sealing key .* copy it from a server"):
            create_app(app_config(tmp_path / "b", db_url))
        shutil.copy(tmp_path / "a" / "data" / "sealing.key", tmp_path / "b" / "data")
        with pytest.raises(ConfigError, match="SECRET_KEY is not the one of the replicas"):
            create_app(app_config(tmp_path / "b", db_url, SECRET_KEY="another"))
        second = create_app(app_config(tmp_path / "b", db_url))  # the same keys: welcome
        components(second).close()
    finally:
        parts.close()
    # With no replica running, a new SECRET_KEY is a rotation: taken, and then the rule.
    rotated = create_app(app_config(tmp_path / "b", db_url, SECRET_KEY="rotated"))
    components(rotated).membership.start()
    try:
        with pytest.raises(ConfigError, match="SECRET_KEY"):
            create_app(app_config(tmp_path / "a", db_url))
    finally:
        components(rotated).close()

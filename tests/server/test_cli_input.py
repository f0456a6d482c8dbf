"""Garbage on kernel-server's command line and in its settings: one clear line, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kernel.exceptions import ConfigError
from kernel.server.core.settings import check, defaults

KERNEL_SERVER = Path(sys.executable).with_name("kernel-server")


def run(tmp_path: Path, *args: str, stdin: bytes = b"", **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("KERNEL_")}
    environ.update(KERNEL_DATA_DIR=str(tmp_path / "data"), **env)
    return subprocess.run(
        [str(KERNEL_SERVER), *args], input=stdin, env=environ, capture_output=True, timeout=60
    )


@pytest.mark.parametrize(
    ("args", "stdin", "env", "needle"),
    [
        (["--listen", "garbage"], b"", {}, b"must be HOST:PORT"),
        (["--listen", "1.2.3.4:99999"], b"", {}, b"must be HOST:PORT"),
        (["nonsense"], b"", {}, b"No such command"),
        (["db", "frobnicate"], b"", {}, b"No such command"),
        (["create-user"], b"", {}, b"Missing argument"),
        (["create-user", "a;b", "--role", "admin"], b"", {}, b"Invalid value for NAME"),
        (
            ["create-user", "bob", "--role", "viewer", "--password-stdin"],
            b"\xff\xfe not utf-8 at all\n",
            {},
            b"not valid UTF-8",
        ),
        (["db", "upgrade"], b"", {"KERNEL_DATABASE_URL": "foo://x"}, b"cannot use the database"),
        (
            ["db", "upgrade"],
            b"",
            {"KERNEL_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/x"},
            b"cannot use the database",
        ),
        ([], b"", {"KERNEL_THREADS": "abc"}, b"KERNEL_THREADS"),
        ([], b"", {"KERNEL_LOCAL_AGENT": "maybe"}, b"KERNEL_LOCAL_AGENT"),
        ([], b"", {"KERNEL_JOB_CONCURRENCY": "-3"}, b"positive"),
    ],
)
def test_garbage_is_one_clear_error(tmp_path, args, stdin, env, needle):
    proc = run(tmp_path, *args, stdin=stdin, **env)
    assert proc.returncode != 0
    assert needle in proc.stderr, proc.stderr
    assert b"Traceback" not in proc.stderr + proc.stdout


def test_check_accepts_the_defaults_and_names_the_variable():
    check(defaults())
    with pytest.raises(ConfigError, match="KERNEL_OUTPUT_CAP"):
        check({**defaults(), "OUTPUT_CAP": "lots"})
    with pytest.raises(ConfigError, match="KERNEL_SSE_MAX_STREAMS"):
        check({**defaults(), "SSE_MAX_STREAMS": 0})
    with pytest.raises(ConfigError, match="KERNEL_RUN_START_TIMEOUT"):
        check({**defaults(), "RUN_START_TIMEOUT": True})
    with pytest.raises(ConfigError, match="KERNEL_PUBLIC_ARTIFACTS"):
        check({**defaults(), "PUBLIC_ARTIFACTS": "maybe"})
    config = {**defaults(), "RUN_START_TIMEOUT": 3, "SSE_MAX_STREAMS": 4}
    config.update(PUBLIC_ARTIFACTS="off", STATUS_INTERVAL="2.5", THREADS="8")
    check(config)  # and each is now of its kind
    assert config["RUN_START_TIMEOUT"] == 3.0 and config["PUBLIC_ARTIFACTS"] is False
    assert config["STATUS_INTERVAL"] == 2.5 and config["THREADS"] == 8

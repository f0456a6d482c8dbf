"""Settings: config file, flags, `init`, `check`, and clear errors for bad ones."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from kernel.agent import (
    SETTINGS,
    Config,
    ConfigError,
    load_config,
    parse_exec_request,
    read_config_file,
    read_key,
)
from support.agents import AGENT_PY


def run_agent(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(AGENT_PY), *args], capture_output=True, text=True, timeout=timeout
    )


def test_init_writes_a_private_key_and_prints_it(tmp_path: Path) -> None:
    key_file = tmp_path / "sub" / "agent.key"
    r = run_agent("init", "--key-file", str(key_file))
    assert r.returncode == 0
    key = r.stdout.strip()
    assert len(key) == 64 and int(key, 16) >= 0
    assert key_file.read_text().strip() == key
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    again = run_agent("init", "--key-file", str(key_file))
    assert again.returncode == 1 and "--force" in again.stderr
    forced = run_agent("init", "--key-file", str(key_file), "--force")
    assert forced.returncode == 0 and forced.stdout.strip() != key


def test_help_documents_every_setting() -> None:
    r = run_agent("--help")
    assert r.returncode == 0
    for name, *_ in SETTINGS:
        assert "--" + name.replace("_", "-") in r.stdout
    assert "init" in r.stdout and "--config" in r.stdout
    doc = (Path(__file__).resolve().parents[2] / "docs" / "agent.md").read_text()
    for name, *_ in SETTINGS:
        assert f"`{name}`" in doc, f"{name} missing from docs/agent.md"


def test_config_file_and_flags(tmp_path: Path) -> None:
    conf = tmp_path / "agent.conf"
    conf.write_text(
        "# comment\n\nlisten = 127.0.0.1:9001\nallow_ips = 10.0.0.0/8, 127.0.0.1\n"
        "max_output_bytes = 1M\nlog_requests = yes\nmax_concurrency = 3  # inline comment\n"
    )
    cfg = load_config(["--config", str(conf), "--max-concurrency", "5"])
    assert cfg.listen_address() == ("127.0.0.1", 9001)
    assert cfg.allow_ips == ["10.0.0.0/8", "127.0.0.1"]
    assert cfg.max_output_bytes == 1 << 20
    assert cfg.log_requests is True
    assert cfg.max_concurrency == 5  # the flag wins
    empty = tmp_path / "empty.conf"
    empty.write_text("")
    assert load_config(["--config", str(empty)]).listen == "0.0.0.0:8001"
    assert Config(listen="[::1]:8001").listen_address() == ("::1", 8001)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("nonsense\n", "expected 'setting = value'"),
        ("colour = blue\n", "known setting"),
        ("max_concurrency = many\n", "max_concurrency"),
        ("max_concurrency = 0\n", "positive"),
        ("listen = nowhere\n", "HOST:PORT"),
        ("allow_ips = 10.0.0.300\n", "allow_ips"),
        ("log_requests = maybe\n", "true or false"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path: Path, text: str, needle: str) -> None:
    conf = tmp_path / "agent.conf"
    conf.write_text(text)
    with pytest.raises(ConfigError, match=needle):
        load_config(["--config", str(conf)])
    r = run_agent("--config", str(conf), "--key-file", "/nonexistent")
    assert r.returncode == 2 and needle.split()[0].strip("'") in r.stderr
    assert "Traceback" not in r.stderr


def test_missing_and_bad_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="kernel-agent init"):
        read_key(str(tmp_path / "none"))
    for bad in ("short", "g" * 64, "", "\xff"):
        (tmp_path / "k").write_text(bad)
        with pytest.raises(ConfigError, match="64 hex"):
            read_key(str(tmp_path / "k"))
    (tmp_path / "k").write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError):
        read_key(str(tmp_path / "k"))
    (tmp_path / "k").write_text("  " + "Ab" * 32 + "\n\n")
    assert read_key(str(tmp_path / "k")) == "Ab" * 32
    r = run_agent("--config", "/dev/null", "--key-file", str(tmp_path / "none"))
    assert r.returncode == 2 and "cannot read key file" in r.stderr


def test_check_command(tmp_path: Path) -> None:
    key = tmp_path / "k"
    key.write_text("a" * 64)
    r = run_agent("check", "--config", "/dev/null", "--key-file", str(key))
    assert r.returncode == 0 and "max_body_bytes = 16777216" in r.stdout
    r = run_agent("check", "--config", "/dev/null", "--key-file", str(key), "--tls-cert", "/x")
    assert r.returncode == 2 and "tls_key" in r.stderr


def test_unreadable_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        read_config_file(str(tmp_path / "missing.conf"))
    (tmp_path / "bin.conf").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="UTF-8"):
        read_config_file(str(tmp_path / "bin.conf"))


def test_exec_spec_fingerprint_ignores_timeout_and_stream() -> None:
    a = parse_exec_request({"cmd": "x", "timeout": 5})
    b = parse_exec_request({"cmd": "x", "stream": True})
    c = parse_exec_request({"cmd": "x", "env": {"A": "1"}})
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()

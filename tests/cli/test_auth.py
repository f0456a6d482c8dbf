"""Logging in and out, profiles, the environment, and what happens when the server or the
token is wrong: one line on stderr and a documented exit status, never a traceback."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.procs import free_port
from support.servers import PASSWORD

from .conftest import Fleet, Kernel


@pytest.fixture
def user(fleet: Fleet, tmp_path: Path) -> Kernel:
    """A user with their own HOME and nothing in the environment yet."""
    return Kernel(fleet.server, tmp_path / "home", "")


def _no_env(k: Kernel, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return k.run(*args, KERNEL_URL=None, KERNEL_TOKEN=None, **kw)


def test_login_saves_a_private_token_and_logout_revokes_it(user: Kernel, fleet: Fleet) -> None:
    url = fleet.server.url
    out = _no_env(user, "login", url, "-u", "tester", "--password-stdin", input=PASSWORD + "\n")
    assert out.returncode == 0, out
    path = user.home / ".config" / "kernel" / "config.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    saved = json.loads(path.read_text())["profiles"]["default"]
    assert saved["url"] == url and saved["token"].startswith("kt_") and saved["user"] == "tester"
    me = json.loads(_no_env(user, "whoami", "--json").stdout)
    assert me["name"] == "tester" and me["role"] == "admin" and me["profile"] == "default"
    assert "csrf_token" not in me
    out = _no_env(user, "exec", "-s", "web1", "--", "echo", "via-profile")
    assert out.stdout == "web1: via-profile\n"
    out = _no_env(user, "logout")
    assert out.returncode == 0 and "logged out" in out.stderr
    assert json.loads(path.read_text())["profiles"] == {}
    r = httpx.get(url + "/api/v1/me", headers={"Authorization": f"Bearer {saved['token']}"})
    assert r.status_code == 401  # revoked on the server
    out = _no_env(user, "whoami")
    assert out.returncode == 5
    assert "kernel login" in out.stderr


def test_profiles_are_separate(user: Kernel, fleet: Fleet) -> None:
    url = fleet.server.url
    for profile, name in (("ops", "tester"), ("ro", "viewer")):
        out = _no_env(
            user,
            "--profile",
            profile,
            "login",
            url,
            "-u",
            name,
            "--password-stdin",
            input=PASSWORD + "\n",
        )
        assert out.returncode == 0, out
    ro = json.loads(_no_env(user, "whoami", "--json", "--profile", "ro").stdout)
    assert ro["name"] == "viewer"
    env_profile = _no_env(user, "whoami", "--json", KERNEL_PROFILE="ops")
    assert json.loads(env_profile.stdout)["name"] == "tester"
    # The default profile was never logged in.
    out = _no_env(user, "whoami")
    assert out.returncode == 5
    # A viewer may read but not run: 403 is exit status 5 with the server's reason.
    out = _no_env(user, "--profile", "ro", "exec", "-s", "web1", "--", "true")
    assert out.returncode == 5
    assert out.stderr.startswith("kernel: forbidden:")
    assert _no_env(user, "--profile", "ro", "servers", "list").returncode == 0


def test_a_profile_token_never_goes_to_another_url(user: Kernel, fleet: Fleet) -> None:
    _no_env(
        user, "login", fleet.server.url, "-u", "tester", "--password-stdin", input=PASSWORD + "\n"
    )
    # A listener that records what it is sent.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        other = f"http://127.0.0.1:{s.getsockname()[1]}"
        out = user.run("whoami", KERNEL_URL=other, KERNEL_TOKEN=None)
    assert out.returncode == 5
    assert "not logged in" in out.stderr


def test_wrong_password(user: Kernel, fleet: Fleet) -> None:
    out = _no_env(
        user, "login", fleet.server.url, "-u", "tester", "--password-stdin", input="nope\n"
    )
    assert out.returncode == 5
    assert out.stderr.count("\n") == 1 and "wrong user name or password" in out.stderr


def test_login_without_a_terminal_needs_password_stdin(user: Kernel, fleet: Fleet) -> None:
    out = _no_env(user, "login", fleet.server.url, "-u", "tester", input="")
    assert out.returncode == 2
    assert "--password-stdin" in out.stderr
    out = _no_env(user, "login", "ftp://x", "-u", "t", "--password-stdin", input="p\n")
    assert out.returncode == 2 and "http://" in out.stderr


def test_wrong_token(kernel: Kernel) -> None:
    for args in (["servers", "list"], ["exec", "-s", "web1", "--", "true"], ["status"]):
        out = kernel.run(*args, KERNEL_TOKEN="kt_not-a-real-token")
        assert out.returncode == 5, out
        assert out.stderr.startswith("kernel: the server refused the token")
        assert out.stderr.count("\n") == 1


def test_server_down(kernel: Kernel) -> None:
    url = f"http://127.0.0.1:{free_port('127.0.0.1')}"  # nothing listens there
    for args in (["servers", "list"], ["exec", "-s", "web1", "--", "true"], ["jobs", "list"]):
        out = kernel.run(*args, KERNEL_URL=url)
        assert out.returncode == 6, out
        assert (
            out.stderr == f"kernel: cannot reach the Kernel server at {url}: connection refused\n"
        )


def test_not_a_kernel_server(kernel: Kernel, fleet: Fleet) -> None:
    # An agent is an HTTP server that is not Kernel's API.
    url = fleet.agents["web1"].url
    out = kernel.run("servers", "list", KERNEL_URL=url)
    assert out.returncode == 6, out
    assert out.stderr.startswith(f"kernel: {url} answered 404 Not Found (")
    assert out.stderr.endswith("is it a Kernel server?\n") and out.stderr.count("\n") == 1
    # The API's own URL instead of the server's base URL.
    out = kernel.run("status", KERNEL_URL=fleet.server.url + "/api/v1")
    assert out.returncode == 6 and "without /api/v1" in out.stderr


GARBAGE = {
    "not http": b"SSH-2.0-OpenSSH_9.2\r\n",
    "not json": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n[[[[[",
    "deep json": b"HTTP/1.1 200 OK\r\nContent-Length: 200000\r\n\r\n" + b"[" * 200000,
    "not utf-8": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n\xff\xfe",
    "redirect": b"HTTP/1.1 301 Moved\r\nLocation: https://k.example/\r\nContent-Length: 0\r\n\r\n",
    "bad chunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    "cut body": b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{",
    "bad length": b"HTTP/1.1 200 OK\r\nContent-Length: lots\r\n\r\n{}",
    "endless header": b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70000,
    "many headers": b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 300,
    "html error": b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 15\r\n\r\n<html>502</html>",
    "kernel 500": b"HTTP/1.1 500 X\r\nContent-Length: 42\r\n\r\n"
    b'{"error":"internal","message":"it broke"}\n',
}


@pytest.mark.parametrize("name", list(GARBAGE))
def test_garbage_answers(kernel: Kernel, name: str) -> None:
    import threading

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        url = f"http://127.0.0.1:{s.getsockname()[1]}"

        def answer() -> None:
            conn, _ = s.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(GARBAGE[name])

        t = threading.Thread(target=answer)
        t.start()
        out = kernel.run("jobs", "list", KERNEL_URL=url, KERNEL_TIMEOUT="5")
        t.join()
    assert out.returncode == 6, out
    assert out.stderr.startswith("kernel: ") and out.stderr.count("\n") == 1, out.stderr


def test_server_that_hangs_up(kernel: Kernel) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
        proc = kernel.popen("servers", "list", KERNEL_URL=url)
        conn, _ = s.accept()
        conn.recv(1000)
        conn.close()
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 6
    assert err.startswith(b"kernel: cannot reach the Kernel server at " + url.encode())
    assert err.count(b"\n") == 1


def test_server_that_never_answers(kernel: Kernel) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
        out = kernel.run("servers", "list", KERNEL_URL=url, KERNEL_TIMEOUT="0.5")
    assert out.returncode == 6
    assert out.stderr.endswith("no answer in time (read timed out)\n")


def test_bad_timeout_setting(kernel: Kernel) -> None:
    out = kernel.run("servers", "list", KERNEL_TIMEOUT="soon")
    assert out.returncode == 2 and "KERNEL_TIMEOUT" in out.stderr


def test_bad_config_file(user: Kernel) -> None:
    path = user.home / ".config" / "kernel" / "config.json"
    path.parent.mkdir(parents=True)
    path.write_text("{broken")
    path.chmod(0o600)
    out = _no_env(user, "servers", "list")
    assert out.returncode == 1
    assert "is not valid JSON" in out.stderr and out.stderr.count("\n") == 1


def test_config_readable_by_others_is_warned_about(user: Kernel, fleet: Fleet) -> None:
    _no_env(
        user, "login", fleet.server.url, "-u", "tester", "--password-stdin", input=PASSWORD + "\n"
    )
    path = user.home / ".config" / "kernel" / "config.json"
    os.chmod(path, 0o644)
    out = _no_env(user, "whoami")
    assert out.returncode == 0
    assert "readable by others" in out.stderr


def test_nothing_configured(user: Kernel) -> None:
    out = _no_env(user, "exec", "-a", "--", "true")
    assert out.returncode == 5
    assert "kernel login URL" in out.stderr

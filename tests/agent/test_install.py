"""install.sh / uninstall.sh in a temporary root (KERNEL_AGENT_ROOT), without systemd.

The real systemd path is exercised by the testbed's full hosts.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import signal
import stat
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kernel.agent import signed_headers
from support.agents import AGENT_PY
from support.procs import free_port, wait_gone

DEPLOY = AGENT_PY.parent / "deploy"
INSTALL = DEPLOY / "install.sh"
UNINSTALL = DEPLOY / "uninstall.sh"
HAS_SYSTEMD = Path("/run/systemd/system").is_dir()


def run(
    script: Path, root: Path, via_stdin: bool = False, **env: str
) -> subprocess.CompletedProcess:
    full = {
        "PATH": os.environ["PATH"],
        "KERNEL_AGENT_ROOT": str(root),
        "KERNEL_AGENT_NO_SYSTEMD": "1",
        "KERNEL_AGENT_SOURCE": str(AGENT_PY),
        **env,
    }
    if via_stdin:  # as in: curl … | sudo bash
        return subprocess.run(
            ["bash"], input=script.read_text(), env=full, capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip
    return subprocess.run(
        ["bash", str(script)], env=full, capture_output=True, text=True, timeout=60
    )


def tree(root: Path) -> dict[str, tuple[int, str]]:
    out = {}
    for p in sorted(root.rglob("*")):
        st = os.lstat(p)
        if "__pycache__" in p.parts:
            continue  # the byte-compiled agent: checked on its own
        content = os.readlink(p) if p.is_symlink() else (p.read_text() if p.is_file() else "")
        out[str(p.relative_to(root))] = (stat.S_IMODE(st.st_mode), content)
    return out


def test_install_is_complete_and_idempotent(tmp_path: Path) -> None:
    root = tmp_path / "root"
    extra = "allow_ips = 127.0.0.1\nmax_concurrency = 7"
    r = run(INSTALL, root, via_stdin=True, KERNEL_AGENT_CONF=extra)
    assert r.returncode == 0, r.stderr
    key = r.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", key)
    files = tree(root)
    assert files["usr/local/lib/kernel-agent/kernel_agent.py"] == (0o755, AGENT_PY.read_text())
    assert files["usr/local/lib/kernel-agent/kernel-agent.py"][1] == "kernel_agent.py"
    assert files["usr/local/bin/kernel-agent"][1] == "/usr/local/lib/kernel-agent/kernel_agent.py"
    assert list((root / "usr/local/lib/kernel-agent/__pycache__").glob("kernel_agent.*.pyc"))
    assert files["etc/kernel-agent/agent.key"] == (0o600, key + "\n")
    mode, conf = files["etc/kernel-agent/agent.conf"]
    assert mode == 0o644
    assert "listen = 0.0.0.0:8001" in conf and "max_concurrency = 7" in conf
    assert f"key_file = {root}/etc/kernel-agent/agent.key" in conf
    unit = (DEPLOY / "kernel-agent.service").read_text()
    assert files["etc/systemd/system/kernel-agent.service"][1] == unit
    assert stat.S_IMODE(os.stat(root / "var/lib/kernel-agent").st_mode) == 0o700
    # again: same result, key kept and not printed
    r = run(INSTALL, root, KERNEL_AGENT_CONF=extra)
    assert r.returncode == 0 and r.stdout == ""
    assert tree(root) == files
    # a given key replaces it
    r = run(INSTALL, root, KERNEL_AGENT_KEY="CD" * 32)
    assert (root / "etc/kernel-agent/agent.key").read_text() == "CD" * 32 + "\n"
    # uninstall reverses every step, twice is fine
    for _ in range(2):
        r = run(UNINSTALL, root)
        assert r.returncode == 0, r.stderr
        assert [p for p in root.rglob("*") if p.is_file() or p.is_symlink()] == []


def test_refusals_leave_the_install_alone(tmp_path: Path) -> None:
    root = tmp_path / "root"
    assert run(INSTALL, root).returncode == 0
    before = tree(root)
    for env, needle in (
        ({"KERNEL_AGENT_SHA256": "0" * 64}, "SHA-256"),
        ({"KERNEL_AGENT_KEY": "not-a-key"}, "64 hex"),
        ({"KERNEL_AGENT_SOURCE": str(tmp_path / "missing.py")}, "cannot copy"),
        ({"KERNEL_AGENT_LISTEN": "nowhere"}, "HOST:PORT"),
        ({"KERNEL_AGENT_CONF": "bogus = 1"}, "bogus"),
        ({"KERNEL_AGENT_SOURCE": "/etc/hostname"}, "not a Kernel agent file"),
    ):
        r = run(INSTALL, root, **env)
        assert r.returncode == 1 and needle in r.stderr, (env, r.stderr)
        assert "Traceback" not in r.stderr
        assert tree(root) == before, env
    good = hashlib.sha256(AGENT_PY.read_bytes()).hexdigest()
    assert run(INSTALL, root, KERNEL_AGENT_SHA256=good.upper()).returncode == 0


@pytest.mark.skipif(HAS_SYSTEMD, reason="this machine runs systemd")
def test_without_systemd_install_says_so(tmp_path: Path) -> None:
    r = run(INSTALL, tmp_path / "root", KERNEL_AGENT_NO_SYSTEMD="")
    assert r.returncode == 1 and "systemd is not running" in r.stderr
    assert not (tmp_path / "root").exists()


def test_unit_file() -> None:
    unit = (DEPLOY / "kernel-agent.service").read_text()
    for line in ("Restart=on-failure", "KillMode=process", "WantedBy=multi-user.target"):
        assert line in unit.splitlines()
    assert "PYTHONPATH=/usr/local/lib/kernel-agent python3 -S -m kernel_agent " in unit


@pytest.fixture
def kernel_server(tmp_path: Path) -> Iterator[tuple[str, list[dict]]]:
    """A stand-in for the server's two agent routes, on loopback."""
    enrolled: list[dict] = []
    agent_bytes = AGENT_PY.read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/agent/kernel-agent.py":
                self.send_response(200)
                self.send_header("Content-Length", str(len(agent_bytes)))
                self.end_headers()
                self.wfile.write(agent_bytes)
            else:
                self.send_error(404)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            enrolled.append(json.loads(body))
            ok = enrolled[-1]["token"] == "good"
            self.send_response(200 if ok else 403)
            self.end_headers()
            self.wfile.write(b'{"ok": true}' if ok else b'{"error": "bad token"}')

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", enrolled
    server.shutdown()
    server.server_close()


def test_download_enroll_and_run_the_installed_agent(tmp_path: Path, kernel_server) -> None:
    url, enrolled = kernel_server
    root = tmp_path / "root"
    port = free_port()
    r = run(
        INSTALL, root, via_stdin=True, KERNEL_URL=url, KERNEL_AGENT_SOURCE="",
        KERNEL_AGENT_SHA256=hashlib.sha256(AGENT_PY.read_bytes()).hexdigest(),
        KERNEL_AGENT_LISTEN=f"127.0.0.1:{port}", KERNEL_ENROLL_TOKEN="good",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert enrolled[-1]["token"] == "good" and enrolled[-1]["port"] == port
    assert enrolled[-1]["hostname"]
    key = (root / "etc/kernel-agent/agent.key").read_text().strip()
    r = run(
        INSTALL, root, KERNEL_URL=url, KERNEL_ENROLL_TOKEN="bad",
        KERNEL_AGENT_LISTEN=f"127.0.0.1:{port}",
    )  # fmt: skip
    assert r.returncode == 1 and "enroll" in r.stderr
    # the installed file with the installed config is a working agent
    proc = subprocess.Popen(
        ["python3", str(root / "usr/local/lib/kernel-agent/kernel-agent.py"),
         "--config", str(root / "etc/kernel-agent/agent.conf")],
        stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.stderr is not None
    line = proc.stderr.readline().decode()
    keeper = int(re.findall(r"keeper pid (\d+)", line)[0])
    try:
        body = b'{"cmd": "echo installed"}'
        h = signed_headers(key, "POST", "/api/v2/exec", body)
        resp = httpx.post(f"http://127.0.0.1:{port}/api/v2/exec", content=body, headers=h)
        assert resp.json()["stdout"] == "installed\n"
        assert (root / "var/lib/kernel-agent/runs").is_dir()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        proc.stderr.close()
        os.kill(keeper, signal.SIGTERM)
        assert not wait_gone([keeper], 5)

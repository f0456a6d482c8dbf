"""The README's quick start, as a newcomer meets it: a fresh clone, then `scripts/run` (which
must set itself up: virtual environment, packages) and `scripts/test` (here with one small test
file, its setup steps being the point), each exactly as the README shows it."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from support.procs import free_port

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow]


def call(url: str, body: Any = None, token: str = "", accept: str = "") -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if accept:
        headers["Accept"] = accept

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any) -> None:
            return None

    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data, headers)
    try:
        with urllib.request.build_opener(NoRedirect).open(req, timeout=10) as resp:
            return resp.status, _body(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, {"location": e.headers.get("Location"), **(_body(e.read()) or {})}


def _body(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return {"text": raw.decode("utf-8", "replace")}


def wait_for(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout:g} s")


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        pytest.skip("the quick start is for root on a Debian machine")
    target = tmp_path / "kernel"
    subprocess.run(["git", "clone", "-q", str(REPO), str(target)], check=True, timeout=120)
    return target


def test_run_and_test_from_a_fresh_clone(clone: Path, tmp_path: Path) -> None:
    port, agent_port = free_port(), free_port()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/root"),
        "KERNEL_DATA_DIR": str(tmp_path / "data"),
        "KERNEL_LOCAL_AGENT_LISTEN": f"127.0.0.1:{agent_port}",
        "KERNEL_STATUS_INTERVAL": "2",
    }
    assert not (clone / ".venv").exists()
    with open(tmp_path / "run.log", "w+") as log:
        proc = subprocess.Popen(
            [str(clone / "scripts/run"), "--listen", f"127.0.0.1:{port}"],
            cwd=clone, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:

            def output() -> str:
                log.seek(0)
                return log.read()

            def serving() -> bool:
                assert proc.poll() is None, output()
                return "Kernel is serving" in output()

            wait_for(serving, 900, "scripts/run did not start the server")  # includes the install
            password = re.search(r"password: (\S+)", output())
            assert password, output()

            status, answer = call(base + "/", accept="text/html,*/*;q=0.8")
            assert status == 302 and answer["location"].endswith("/login")
            status, answer = call(base + "/", accept="application/json")
            assert status == 200 and answer["api"] == "/api/v1"

            status, answer = call(
                base + "/api/v1/auth/token", {"username": "admin", "password": password.group(1)}
            )
            assert status == 201, answer
            token = answer["token"]

            def local_online() -> Any:
                _, servers = call(base + "/api/v1/servers", token=token)
                online = [s for s in servers["servers"] if s["state"] == "online"]
                return online and online[0]

            server = wait_for(local_online, 60, "the local agent did not join")
            assert "local" in server["tags"]
            status, job = call(
                base + "/api/v1/jobs", {"cmd": "echo quick start", "targets": {"all": True}}, token
            )
            assert status == 201, job

            def finished() -> Any:
                _, j = call(f"{base}/api/v1/jobs/{job['id']}?output=1", token=token)
                return j if j["state"] == "finished" else None

            done = wait_for(finished, 60, "the job did not finish")
            assert [(r["state"], r["stdout"]) for r in done["runs"]] == [("ok", "quick start\n")]
        finally:
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: server and local agent stop
            try:
                code = proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
                raise
        assert code == 0, output()
    with socket.socket() as s:  # the local agent is gone too
        assert s.connect_ex(("127.0.0.1", agent_port)) != 0

    # The test command, on the same clone (its virtual environment is there now), with its
    # own PostgreSQL: the suite's own server must not be stopped by its exit.
    pg_dir = tempfile.mkdtemp(prefix="kernel-quickstart-pg-")  # the postgres user must reach it
    os.chmod(pg_dir, 0o755)
    env.update(KERNEL_TEST_PG_PORT=str(free_port()), KERNEL_TEST_PG_DIR=pg_dir)
    try:
        done_test = subprocess.run(
            [str(clone / "scripts/test"), "tests/agent/test_portability.py", "-q", "-p",
             "no:cacheprovider"],
            cwd=clone, env=env, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
    finally:
        shutil.rmtree(pg_dir, ignore_errors=True)
    assert done_test.returncode == 0, done_test.stdout[-3000:] + done_test.stderr[-3000:]
    assert " passed" in done_test.stdout

"""bench/swarm.py (the scale benchmark's simulated hosts) refuses what a real agent refuses:
a request signed with another key, and a replayed nonce — checked with the real agent client
against a swarm process on its own loopback address. (The swarm is a benchmark tool: no test
uses it in place of real agents; this one tests the tool.)"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kernel.agent import signed_headers
from kernel.agent_client import AgentClient
from kernel.exceptions import AgentRefused
from support.procs import free_port

ROOT = Path(__file__).resolve().parents[2]
BASE = "127.66.0.1"


@pytest.fixture
def swarm(tmp_path: Path) -> Iterator[list[dict[str, str]]]:
    port = free_port(BASE)
    hosts_file = tmp_path / "hosts.json"
    log = open(tmp_path / "swarm.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "swarm.py"), "serve", "--hosts", "2", "--base",
         BASE, "--port", str(port), "--hosts-file", str(hosts_file), "--exec-ms", "1"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while b"swarm ready" not in (tmp_path / "swarm.log").read_bytes():
            assert proc.poll() is None, (tmp_path / "swarm.log").read_text()
            assert time.monotonic() < deadline, "the swarm did not start"
            time.sleep(0.05)
        yield json.loads(hosts_file.read_text())
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()


def test_swarm_checks_signatures_and_nonces(swarm: list[dict[str, str]]) -> None:
    one, two = swarm
    assert one["key"] != two["key"]
    with AgentClient(one["agent_url"], one["key"], timeout=10) as good:
        assert good.exec("echo hi").stdout == "hi\n"
    # Host two's key is not host one's.
    with AgentClient(one["agent_url"], two["key"], timeout=10) as wrong:
        with pytest.raises(AgentRefused, match="bad signature"):
            wrong.info()
    # The same signed request twice: the second is a replay.
    headers = signed_headers(one["key"], "GET", "/api/v2/info", b"")
    with httpx.Client(timeout=10) as c:
        assert c.get(one["agent_url"] + "/api/v2/info", headers=headers).status_code == 200
        r = c.get(one["agent_url"] + "/api/v2/info", headers=headers)
    assert r.status_code == 401, r.text
    assert "nonce" in r.json()["msg"]

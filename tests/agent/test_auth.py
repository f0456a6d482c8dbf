"""Signed requests against a real agent: every way of getting it wrong is a 401."""

from __future__ import annotations

import time

from kernel.agent import signed_headers
from support.agents import Agent


def post_info(agent: Agent, headers: dict[str, str], path: str = "/api/v2/info") -> tuple:
    import httpx

    r = httpx.get(agent.url + path, headers=headers, timeout=10)
    return r.status_code, r.json()


def test_good_signature(agent: Agent) -> None:
    r = agent.request("GET", "/api/v2/info")
    assert r.status_code == 200
    info = r.json()
    assert info["protocol"] == 2
    for name in ("version", "hostname", "os", "kernel", "arch", "python", "uptime", "limits"):
        assert name in info


def test_wrong_key(agent: Agent) -> None:
    r = agent.request("GET", "/api/v2/info", key="cd" * 32)
    assert r.status_code == 401
    assert r.json() == {"code": 401, "error": "unauthorized", "msg": "bad signature"}


def test_tampered_body(agent: Agent) -> None:
    body = b'{"cmd": "true"}'
    h = signed_headers(agent.key, "POST", "/api/v2/exec", body)
    import httpx

    r = httpx.post(agent.url + "/api/v2/exec", content=b'{"cmd": "id"}', headers=h)
    assert r.status_code == 401


def test_old_and_future_time(agent: Agent) -> None:
    now = int(time.time())
    for ts in (now - 400, now + 400):
        h = signed_headers(agent.key, "GET", "/api/v2/info", b"", now=ts)
        code, data = post_info(agent, h)
        assert code == 401 and "clock" in data["msg"]


def test_replayed_nonce_also_after_restart(agent: Agent) -> None:
    h = signed_headers(agent.key, "GET", "/api/v2/info", b"")
    assert post_info(agent, h)[0] == 200
    code, data = post_info(agent, h)
    assert code == 401 and data["msg"] == "nonce already used"
    agent.restart()
    code, data = post_info(agent, h)
    assert code == 401 and data["msg"] == "nonce already used"


def test_missing_headers(agent: Agent) -> None:
    full = signed_headers(agent.key, "GET", "/api/v2/info", b"")
    for drop in list(full):
        h = {k: v for k, v in full.items() if k != drop}
        code, data = post_info(agent, h)
        assert code == 401 and "missing" in data["msg"]


def test_signature_covers_path_and_query(agent: Agent) -> None:
    h = signed_headers(agent.key, "GET", "/api/v2/info", b"")
    code, _ = post_info(agent, h, "/api/v2/info?x=1")
    assert code == 401


def test_healthz_needs_no_signature(agent: Agent) -> None:
    import httpx

    r = httpx.get(agent.url + "/healthz")
    assert (r.status_code, r.text) == (200, "ok")

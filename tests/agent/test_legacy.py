"""The seed's /api/ExecCmd: off by default, fenced by legacy_allow_ips, Go-shaped replies."""

from __future__ import annotations

import json

import httpx

from .conftest import Agent


def from_ip(ip: str) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(local_address=ip), timeout=30)


def test_off_unless_configured(agent: Agent) -> None:
    with from_ip("127.0.0.1") as c:
        r = c.post(agent.url + "/api/ExecCmd", data={"cmd": "echo hi"})
    assert r.status_code == 404 and r.json()["error"] == "not_found"


def test_allowed_and_refused_sources(agent_factory) -> None:
    agent = agent_factory("--legacy-allow-ips", "127.0.0.2,10.0.0.0/8")
    with from_ip("127.0.0.3") as c:
        r = c.post(agent.url + "/api/ExecCmd", data={"cmd": "touch /tmp/never"})
    assert r.status_code == 403
    assert r.json() == {"code": -1, "msg": "非服务器IP"}
    with from_ip("127.0.0.2") as c:
        # the original server's form body
        r = c.post(agent.url + "/api/ExecCmd", data={"cmd": "echo hi; echo e >&2"})
        assert r.status_code == 200 and r.json() == {"code": 0, "msg": "hi\n"}
        # the seed text's JSON body, any method
        r = c.request("GET", agent.url + "/api/ExecCmd", content=json.dumps({"cmd": "echo j"}))
        assert r.json() == {"code": 0, "msg": "j\n"}
        r = c.get(agent.url + "/api/ExecCmd", params={"cmd": "echo q"})
        assert r.json() == {"code": 0, "msg": "q\n"}
        r = c.post(agent.url + "/api/ExecCmd", data={"cmd": "echo partial; exit 3"})
        assert r.json() == {"code": 1, "err": "exit status 3", "msg": "partial\n"}
        r = c.post(agent.url + "/api/ExecCmd", data={"cmd": "kill -9 $$"})
        assert r.json() == {"code": 1, "err": "signal: killed", "msg": ""}
        for bad in (b"", b"nocmd=1", b"{", b"\xff\xfe", b'{"cmd": 5}'):
            r = c.post(agent.url + "/api/ExecCmd", content=bad)
            assert r.status_code == 200 and r.json()["code"] == -2, bad
    # legacy_allow_ips does not open the signed API
    with from_ip("127.0.0.2") as c:
        assert c.get(agent.url + "/api/v2/info").status_code == 401


def test_allow_ips_fences_v2(agent_factory) -> None:
    agent = agent_factory("--allow-ips", "127.0.0.1/32")
    assert agent.request("GET", "/api/v2/info").status_code == 200
    with from_ip("127.0.0.5") as c:
        r = c.get(agent.url + "/api/v2/info")
        assert r.status_code == 403 and r.json()["error"] == "forbidden"
        assert c.get(agent.url + "/healthz").status_code == 200  # liveness is not fenced


def test_forwarded_for_only_from_trusted_proxies(agent_factory) -> None:
    agent = agent_factory("--allow-ips", "10.1.2.3", "--trusted-proxies", "127.0.0.2")
    h = {"X-Forwarded-For": "192.0.2.1, 10.1.2.3"}  # the proxy appends the real peer
    with from_ip("127.0.0.2") as c:
        assert agent.request("GET", "/api/v2/info", client=c, headers=h).status_code == 200
    with from_ip("127.0.0.3") as c:
        assert agent.request("GET", "/api/v2/info", client=c, headers=h).status_code == 403

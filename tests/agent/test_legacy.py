"""The seed's /api/ExecCmd: off by default, fenced by legacy_allow_ips, Go-shaped replies."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from kernel.agent import legacy_reply
from support.agents import Agent


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
    assert r.status_code == 403  # the Go agent answered 200 (docs/agent.md)
    assert r.json() == {"code": -1, "err": "非服务器IP", "msg": "非服务器IP"}
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
            assert r.json()["err"] == r.json()["msg"], bad
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


@pytest.fixture
def legacy(agent_factory: Callable[..., Agent]) -> Iterator[tuple[Agent, httpx.Client]]:
    agent = agent_factory("--legacy-allow-ips", "127.0.0.2", "--trusted-proxies", "127.0.0.4")
    with from_ip("127.0.0.2") as c:
        yield agent, c


def test_every_non_zero_code_has_err(legacy: tuple[Agent, httpx.Client]) -> None:
    """The original server reads ['err'] whenever code != 0: without it, it answers 500."""
    agent, c = legacy
    url = agent.url + "/api/ExecCmd"
    replies = [
        c.post(url, data={"cmd": "exit 4"}).json(),
        c.post(url, data={"cmd": "kill -TERM $$"}).json(),
        c.post(url, content=b"").json(),  # no cmd
        c.post(url, content=b"cmd=%FF").json(),  # not text
        c.post(url, content=b"x" * (17 << 20)).json(),  # over max_body_bytes: 413
    ]
    with from_ip("127.0.0.3") as other:
        replies.append(other.post(url, data={"cmd": "true"}).json())  # refused address
    for reply in replies:
        assert reply["code"] != 0 and isinstance(reply.get("err"), str) and reply["err"], reply
    assert [r["code"] for r in replies] == [1, 1, -2, -2, -2, -1]
    assert replies[1]["err"] == "signal: terminated"


def test_lost_and_failed_replies_have_err() -> None:
    lost = {"state": "lost", "exit_code": None, "signal": None, "stdout": "", "reason": "gone"}
    assert legacy_reply(lost) == {
        "code": -2, "err": "execution lost: gone", "msg": "execution lost: gone",
    }  # fmt: skip
    assert legacy_reply({"exit_code": 127, "stdout": ""})["err"] == "exit status 127"


def test_empty_cmd_runs_as_under_the_go_agent(legacy: tuple[Agent, httpx.Client]) -> None:
    """`bash -c ""` exits 0; a missing cmd keeps its clear -2 (the Go agent hung up)."""
    agent, c = legacy
    url = agent.url + "/api/ExecCmd"
    assert c.post(url, content=b"cmd=").json() == {"code": 0, "msg": ""}
    assert c.post(url, content=b'{"cmd": ""}').json() == {"code": 0, "msg": ""}
    assert c.get(url + "?cmd=").json() == {"code": 0, "msg": ""}
    r = c.post(url, content=b"other=1")
    missing = {"code": -2, "err": "missing cmd", "msg": "missing cmd"}
    assert (r.status_code, r.json()) == (200, missing)


@pytest.mark.parametrize(
    "body",
    [b"cmd=%FF", b"cmd=\xff\xfe", b"cmd=a%00b", b'{"cmd": "\\ud800"}', b'{"cmd": "a\\u0000"}',
     b'{"cmd": ["ls"]}'],
)  # fmt: skip
def test_a_cmd_that_is_not_text(legacy: tuple[Agent, httpx.Client], body: bytes) -> None:
    agent, c = legacy
    r = c.post(agent.url + "/api/ExecCmd", content=body)
    data = r.json()
    assert r.status_code == 200 and data["code"] == -2 and data["err"] == data["msg"]
    assert "not valid text" in data["err"] or "must be a string" in data["err"]


def test_limits_the_go_agent_did_not_have(agent_factory: Callable[..., Agent]) -> None:
    """What the original server sees: the output cap cuts msg; the concurrency limit is HTTP
    429 with a -2 reply."""
    agent = agent_factory(
        "--legacy-allow-ips", "127.0.0.2", "--max-output-bytes", "1K", "--max-concurrency", "1"
    )
    url = agent.url + "/api/ExecCmd"
    with from_ip("127.0.0.2") as c:
        r = c.post(url, data={"cmd": "head -c 5000 /dev/zero | tr '\\0' x"})
        assert r.json() == {"code": 0, "msg": "x" * 1024}
        busy = threading.Thread(target=lambda: c.post(url, data={"cmd": "sleep 1.5"}))
        busy.start()
        try:
            deadline = time.monotonic() + 10
            while agent.request("GET", "/api/v2/info").json()["running"] == 0:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            with from_ip("127.0.0.2") as c2:
                r = c2.post(url, data={"cmd": "true"})
            assert r.status_code == 429
            assert r.json() == {
                "code": -2, "err": "1 executions are already running",
                "msg": "1 executions are already running",
            }  # fmt: skip
        finally:
            busy.join()


def test_forwarded_for_is_believed_only_from_a_trusted_proxy(
    legacy: tuple[Agent, httpx.Client],
) -> None:
    """The Go agent believed X-Forwarded-For from anyone: any host could claim the server's
    address. Kernel believes it only from trusted_proxies (its last entry)."""
    agent, _ = legacy
    url = agent.url + "/api/ExecCmd"
    h = {"X-Forwarded-For": "127.0.0.2"}
    with from_ip("127.0.0.3") as c:
        r = c.post(url, data={"cmd": "echo spoofed"}, headers=h)
        assert (r.status_code, r.json()["code"]) == (403, -1)
    with from_ip("127.0.0.4") as proxy:
        r = proxy.post(url, data={"cmd": "echo proxied"}, headers=h)
        assert r.json() == {"code": 0, "msg": "proxied\n"}

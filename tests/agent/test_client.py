"""kernel.agent_client against real agents, with and without TLS pinning."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from kernel.agent_client import (
    AgentClient,
    AgentError,
    AgentUnreachable,
    AsyncAgentClient,
    ExecResult,
    fetch_tls_fingerprint,
    normalize_fingerprint,
)
from support.agents import Agent, self_signed_cert
from support.procs import free_port


def test_sync_client(agent: Agent, tmp_path: Path) -> None:
    with AgentClient(agent.url, agent.key) as c:
        assert c.healthz()
        assert c.info()["protocol"] == 2
        r = c.exec("echo $X; cat; exit 2", stdin="in\n", env={"X": "x"}, cwd="/tmp", id="s1")
        assert isinstance(r, ExecResult) and not r.ok
        assert (r.exit_code, r.stdout, r.state) == (2, "x\nin\n", "finished")
        assert (
            c.exec("echo $X; cat; exit 2", stdin="in\n", env={"X": "x"}, cwd="/tmp", id="s1") == r
        )
        assert c.status("s1") == r
        assert c.cancel("s1") == r
        events = list(c.stream("echo a; echo b >&2", id="s2"))
        assert [e["event"] for e in events] == ["started", "stdout", "stderr", "exit"]
        assert c.status("s2", wait=1).ok
        with pytest.raises(AgentError) as e:
            c.exec("other", id="s1")
        assert (e.value.code, e.value.error) == (409, "conflict")
        with pytest.raises(AgentError) as e:
            c.status("missing")
        assert e.value.code == 404
        with pytest.raises(AgentError) as e:
            list(c.stream("x", cwd="relative"))
        assert e.value.code == 400
        t = c.exec("sleep 5", timeout=0.2)
        assert t.timed_out and t.signal == 15 and t.exit_code is None


def test_wrong_key_and_unreachable() -> None:
    with AgentClient(f"http://127.0.0.1:{free_port()}", "ab" * 32, timeout=2) as c:
        assert not c.healthz()
        with pytest.raises(AgentUnreachable):
            c.info()


def test_wrong_key_is_an_agent_error(agent: Agent) -> None:
    with AgentClient(agent.url, "cd" * 32) as c, pytest.raises(AgentError) as e:
        c.exec("true")
    assert e.value.code == 401 and not isinstance(e.value, AgentUnreachable)


def test_async_client(agent: Agent) -> None:
    async def main() -> None:
        async with AsyncAgentClient(agent.url, agent.key) as c:
            assert await c.healthz()
            assert (await c.info())["protocol"] == 2
            results = await asyncio.gather(*(c.exec(f"echo {i}") for i in range(10)))
            assert [r.stdout for r in results] == [f"{i}\n" for i in range(10)]
            events = [e async for e in c.stream("echo s", id="a1")]
            assert events[-1]["event"] == "exit" and events[-1]["exit_code"] == 0
            assert (await c.status("a1")).stdout == "s\n"
            assert (await c.cancel("a1")).ok
            with pytest.raises(AgentError):
                await c.status("nope")
            # one output event longer than a read buffer (64 KiB) still arrives whole
            big = [e async for e in c.stream("head -c 300000 /dev/zero | tr '\\0' x")]
            assert "".join(e.get("data", "") for e in big if e["event"] == "stdout") == "x" * 300000
            with pytest.raises(AgentError) as e:
                [e async for e in c.stream("x", cwd="relative")]
            assert e.value.code == 400
        async with AsyncAgentClient(agent.url, "cd" * 32) as c:
            with pytest.raises(AgentError) as e:
                await c.exec("true")
            assert e.value.code == 401 and not isinstance(e.value, AgentUnreachable)
        async with AsyncAgentClient(f"http://127.0.0.1:{free_port()}", agent.key, timeout=2) as c:
            assert not await c.healthz()
            with pytest.raises(AgentUnreachable):
                await c.info()
            with pytest.raises(AgentUnreachable):
                [e async for e in c.stream("true")]

    asyncio.run(main())


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[str, str]:
    return self_signed_cert(tmp_path)


def test_tls_with_pinned_fingerprint(agent_factory, tls_files, tmp_path: Path) -> None:
    cert, key = tls_files
    agent = agent_factory("--tls-cert", cert, "--tls-key", key)
    fp = fetch_tls_fingerprint(agent.url)
    out = subprocess.run(
        ["openssl", "x509", "-in", cert, "-noout", "-fingerprint", "-sha256"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert fp == normalize_fingerprint(out.split("=", 1)[1])
    with AgentClient(agent.url, agent.key, tls_fingerprint=fp.upper()) as c:
        assert c.exec("echo secure").stdout == "secure\n"
        assert c.info()["tls"] is True
    marker = tmp_path / "must-not-exist"
    with AgentClient(agent.url, agent.key, tls_fingerprint="00" * 32) as c:
        with pytest.raises(AgentUnreachable) as e:
            c.exec(f"touch {marker}")
        assert e.value.error == "tls_pin_mismatch"
        assert not c.healthz()
    assert not marker.exists()  # the pin is checked before the request is sent

    async def main() -> None:
        async with AsyncAgentClient(agent.url, agent.key, tls_fingerprint=fp) as c:
            assert (await c.exec("echo a")).stdout == "a\n"
        async with AsyncAgentClient(agent.url, agent.key, tls_fingerprint="11" * 32) as c:
            with pytest.raises(AgentUnreachable) as e:
                await c.exec(f"touch {marker}")
            assert e.value.error == "tls_pin_mismatch" and "11" * 32 in str(e.value)
            assert not await c.healthz()

    asyncio.run(main())
    assert not marker.exists()
    # plain HTTP to a TLS agent does not work, and does not hurt it
    with AgentClient(agent.url.replace("https", "http"), agent.key, timeout=5) as c:
        with pytest.raises(AgentError):
            c.info()


def test_fingerprint_helpers() -> None:
    assert normalize_fingerprint("AB:" * 31 + "AB") == "ab" * 32
    for bad in ("", "xyz", "ab" * 31):
        with pytest.raises(ValueError):
            normalize_fingerprint(bad)
    with pytest.raises(ValueError):
        fetch_tls_fingerprint("http://127.0.0.1:1")
    with pytest.raises(AgentUnreachable):
        fetch_tls_fingerprint(f"https://127.0.0.1:{free_port()}", timeout=2)

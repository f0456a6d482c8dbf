"""Stalled, slow and crowding clients cannot pin the agent (docs/agent.md, "HTTP server").

Real agents on 127.0.0.1; the crowd connects from other loopback addresses (127.0.0.x).
"Answered" means within the client's 10 s timeout: before the fix such a request waited
~75 s behind 300 silent sockets.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from kernel.agent import signed_headers
from support.agents import Agent, self_signed_cert


def threads_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads line")


@contextmanager
def crowd(agent: Agent, source: str, n: int, first: bytes = b"") -> Iterator[list[socket.socket]]:
    """``n`` connections from ``source``, each having sent ``first`` (nothing by default)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", agent.port), source_address=(source, 0))
            if first:
                s.sendall(first)
            socks.append(s)
        yield socks
    finally:
        for s in socks:
            s.close()


def signed_info(agent: Agent, source: str = "127.0.0.1") -> httpx.Response:
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, timeout=10) as c:
        return agent.request("GET", "/api/v2/info", client=c)


def closed_by_peer(s: socket.socket, timeout: float) -> bool:
    s.settimeout(timeout)
    try:
        return s.recv(65536) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


@pytest.fixture
def fenced_agent(agent_factory: Callable[..., Agent]) -> Agent:
    return agent_factory("--allow-ips", "127.0.0.1,127.0.0.2")


def test_300_silent_sockets_from_a_refused_address(fenced_agent: Agent) -> None:
    agent = fenced_agent
    assert agent.proc is not None
    with crowd(agent, "127.0.0.9", 300):
        assert signed_info(agent).status_code == 200
        assert agent.exec("echo through")["stdout"] == "through\n"
        # Refused addresses never get a thread: the loop holds (and answers) them.
        assert threads_of(agent.proc.pid) < 10


def test_a_refused_address_is_answered_by_the_loop(fenced_agent: Agent) -> None:
    transport = httpx.HTTPTransport(local_address="127.0.0.9")
    with httpx.Client(transport=transport, timeout=10) as c:
        r = fenced_agent.request("GET", "/api/v2/info", client=c)
        assert r.status_code == 403
        assert r.json() == {
            "code": 403,
            "error": "forbidden",
            "msg": "source address 127.0.0.9 is not allowed",
        }
        assert r.headers["connection"] == "close"
        # /healthz says only "ok" and stays unfenced (install.sh and monitors rely on it)
        assert c.get(fenced_agent.url + "/healthz").text == "ok"
        # a big body does not turn the answer into a reset
        r = c.post(fenced_agent.url + "/api/v2/exec", content=b"x" * 300000)
        assert r.status_code == 403


def test_a_refused_address_that_sends_nothing_is_dropped(fenced_agent: Agent) -> None:
    with crowd(fenced_agent, "127.0.0.9", 1) as socks:
        assert closed_by_peer(socks[0], 10)


def test_300_silent_sockets_from_an_allowed_address(fenced_agent: Agent) -> None:
    agent = fenced_agent
    assert agent.proc is not None
    with crowd(agent, "127.0.0.2", 300) as socks:
        assert signed_info(agent).status_code == 200
        # the crowd's own address is served too: its oldest silent sockets made room
        assert signed_info(agent, "127.0.0.2").status_code == 200
        assert threads_of(agent.proc.pid) < 10  # silent sockets hold no thread
        # at max_connections (256) the oldest of the crowd were closed for the newcomers
        assert closed_by_peer(socks[0], 5)


def test_a_silent_new_connection_has_a_short_deadline(agent: Agent) -> None:
    """Not the 75 s of an idle keep-alive connection: min(5 s, request_timeout) (3 s here)."""
    with crowd(agent, "127.0.0.1", 1) as socks:
        started = time.monotonic()
        assert closed_by_peer(socks[0], 30)
        assert time.monotonic() - started < 20


def test_slowloris_from_one_address_does_not_delay_another(agent: Agent) -> None:
    """50 clients trickling their request from 127.0.0.2: at most 16 are read at once
    (max_unauthenticated_per_ip), each cut off at request_timeout; 127.0.0.1 is served."""
    assert agent.proc is not None
    stop = threading.Event()
    with crowd(agent, "127.0.0.2", 50, first=b"P") as socks:

        def trickle() -> None:
            while not stop.wait(0.2):
                for s in socks:
                    try:
                        s.send(b"O")
                    except OSError:
                        pass

        t = threading.Thread(target=trickle)
        t.start()
        try:
            for _ in range(5):
                assert signed_info(agent).status_code == 200
            assert threads_of(agent.proc.pid) < 16 + 10
            # every slow client is cut off (request_timeout 3 s; queued ones as well)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not all(closed_by_peer(s, 0.01) for s in socks):
                time.sleep(0.2)
            assert all(closed_by_peer(s, 0.01) for s in socks)
        finally:
            stop.set()
            t.join()


def test_a_burst_of_100_parallel_connections(agent_factory: Callable[..., Agent]) -> None:
    """100 clients at once from one address, each a signed request in two sends (head,
    then body): all are answered, none is reset."""
    agent = agent_factory("--max-concurrency", "128")
    results: list[object] = []

    def one(i: int) -> None:
        body = json.dumps({"cmd": f"echo {i}"}).encode()
        h = signed_headers(agent.key, "POST", "/api/v2/exec", body)
        fields = "".join(f"{k}: {v}\r\n" for k, v in h.items())
        head = f"POST /api/v2/exec HTTP/1.1\r\nContent-Length: {len(body)}\r\n{fields}\r\n"
        try:
            with socket.create_connection(("127.0.0.1", agent.port), timeout=30) as s:
                s.sendall(head.encode())
                time.sleep(0.05)
                s.sendall(body)
                out = b""
                while b"\r\n\r\n" not in out or not out.rstrip().endswith(b"}"):
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    out += chunk
            status = int(out.split(b" ", 2)[1])
            data = json.loads(out.split(b"\r\n\r\n", 1)[1])
            results.append((status, data["stdout"]))
        except Exception as e:  # recorded, asserted below
            results.append(e)

    workers = [threading.Thread(target=one, args=(i,)) for i in range(100)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert sorted(results, key=str) == sorted(((200, f"{i}\n") for i in range(100)), key=str)


def test_bursts_of_connections_keep_the_agent_serving(agent: Agent) -> None:
    """Three bursts of 100 connections that open, send half a request and vanish."""
    for _ in range(3):
        with crowd(agent, "127.0.0.2", 100, first=b"GET /api/v2/info HT"):
            pass
    assert signed_info(agent).status_code == 200
    assert agent.healthy()


def test_keep_alive_connection_survives_parking(agent: Agent) -> None:
    """A kept-alive client that pauses longer than its thread waits is still served on the
    same connection (the loop held it meanwhile)."""
    with httpx.Client(timeout=10) as c:
        assert agent.request("GET", "/api/v2/info", client=c).status_code == 200
        time.sleep(1.5)
        assert agent.request("GET", "/api/v2/info", client=c).status_code == 200
        assert agent.exec("echo again")["stdout"] == "again\n"


def test_over_tls(agent_factory: Callable[..., Agent], tmp_path: Path) -> None:
    """The loop answers refused addresses over TLS too (its handshake does not block the
    loop), and a parked TLS connection carries on."""
    cert, key = self_signed_cert(tmp_path)
    agent = agent_factory("--tls-cert", cert, "--tls-key", key, "--allow-ips", "127.0.0.1")
    with crowd(agent, "127.0.0.9", 50):  # silent sockets, not even a ClientHello
        transport = httpx.HTTPTransport(local_address="127.0.0.9", verify=False)
        with httpx.Client(transport=transport, timeout=10) as c:
            r = agent.request("GET", "/api/v2/info", client=c)
            assert r.status_code == 403 and r.json()["error"] == "forbidden"
            assert c.get(agent.url + "/healthz").text == "ok"
        with httpx.Client(verify=False, timeout=10) as c:
            assert agent.request("GET", "/api/v2/info", client=c).json()["tls"] is True
            time.sleep(1.5)  # parked by the loop, then served by a new thread
            assert agent.request("GET", "/api/v2/info", client=c).status_code == 200

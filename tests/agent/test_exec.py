"""Executions on a real agent: results, limits, timeouts, cancel, streaming, idempotency,
and that killing a run kills its whole process group."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import httpx

from kernel.agent import signed_headers
from support.agents import Agent
from support.procs import pid_alive


def test_results(agent: Agent, tmp_path: Path) -> None:
    r = agent.exec("echo out; echo err >&2; exit 3")
    assert (r["exit_code"], r["signal"], r["stdout"], r["stderr"]) == (3, None, "out\n", "err\n")
    assert r["state"] == "finished" and not r["timed_out"] and not r["cancelled"]
    assert r["finished_at"] >= r["started_at"] and r["duration"] >= 0
    assert agent.exec("true")["exit_code"] == 0
    assert agent.exec("kill -9 $$")["signal"] == 9
    assert agent.exec("cat; cat", stdin="line\n")["stdout"] == "line\n"
    big = "x" * 1_000_000
    assert agent.exec("wc -c", stdin=big)["stdout"].strip() == "1000000"
    assert agent.exec("echo $A-$B", env={"A": "1", "B": "é"})["stdout"] == "1-é\n"
    assert agent.exec("pwd", cwd=str(tmp_path))["stdout"] == f"{tmp_path}\n"
    assert agent.exec("pwd")["stdout"] == "/\n"
    assert agent.exec("printf '\\xff\\xfeok'")["stdout"] == "\ufffd\ufffdok"
    assert agent.exec("test -t 0 || echo no-tty")["stdout"] == "no-tty\n"
    # SIGPIPE is back to default for commands, as in a shell
    assert agent.exec("yes | head -c 3")["stdout"] == "y\ny"


def pids_from(path: Path) -> list[int]:
    return [int(x) for x in path.read_text().split()]


def test_timeout_kills_the_whole_group(agent: Agent, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    r = agent.exec(f"echo $$ > {pids}; sh -c 'sleep 1000 & echo $! >> {pids}; wait'", timeout=0.5)
    assert r["timed_out"] and r["exit_code"] is None and r["signal"] == signal.SIGTERM
    assert r["duration"] < 3
    time.sleep(0.2)
    assert not [p for p in pids_from(pids) if pid_alive(p)]


def test_sigterm_ignoring_children_get_sigkill_after_grace(agent: Agent, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    cmd = f"trap '' TERM; echo $$ > {pids}; sleep 1000 & echo $! >> {pids}; wait; wait"
    r = agent.exec(cmd, timeout=0.3)
    assert r["timed_out"] and r["signal"] == signal.SIGKILL
    assert 5 <= r["duration"] < 8
    assert not [p for p in pids_from(pids) if pid_alive(p)]


def start_stream(agent: Agent, body: dict) -> tuple[httpx.Client, httpx.Response, dict]:
    """Open a streaming exec and return after its 'started' event."""
    client = httpx.Client(timeout=60)
    raw = json.dumps({**body, "stream": True}).encode()
    headers = signed_headers(agent.key, "POST", "/api/v2/exec", raw)
    req = client.build_request("POST", agent.url + "/api/v2/exec", content=raw, headers=headers)
    resp = client.send(req, stream=True)
    assert resp.status_code == 200
    lines = resp.iter_lines()
    started = json.loads(next(lines))
    assert started["event"] == "started"
    resp.extensions["lines"] = lines
    return client, resp, started


def test_cancel(agent: Agent, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    client, resp, _ = start_stream(
        agent, {"cmd": f"echo $$ > {pids}; sleep 1000 & echo $! >> {pids}; wait", "id": "c1"}
    )
    while not pids.exists() or len(pids.read_text().split()) < 2:
        time.sleep(0.02)
    r = agent.request("GET", "/api/v2/exec/c1").json()
    assert r["state"] == "running" and r["exit_code"] is None
    r = agent.request("DELETE", "/api/v2/exec/c1").json()
    assert r["state"] == "finished" and r["cancelled"] and r["signal"] == signal.SIGTERM
    events = [json.loads(line) for line in resp.extensions["lines"]]
    assert events[-1]["event"] == "exit" and events[-1]["cancelled"]
    resp.close()
    client.close()
    assert not [p for p in pids_from(pids) if pid_alive(p)]
    # cancelling a finished run changes nothing
    assert agent.request("DELETE", "/api/v2/exec/c1").json()["cancelled"]
    assert agent.request("DELETE", "/api/v2/exec/nope").status_code == 404


def test_output_flood_is_capped(agent_factory) -> None:
    agent = agent_factory("--max-output-bytes", "64K")
    r = agent.exec("head -c 20000000 /dev/zero | tr '\\0' a; head -c 300000 /dev/zero >&2")
    assert r["exit_code"] == 0 and r["truncated"]
    assert r["stdout"] == "a" * 65536 and len(r["stderr"]) == 65536
    base = agent.state_dir / "runs" / r["id"]
    assert os.path.getsize(f"{base}.stdout") == 65536
    assert agent.exec("echo small")["truncated"] is False


def test_streaming_order_and_utf8_boundaries(agent: Agent) -> None:
    cmd = (
        "for i in 1 2 3; do echo out$i; sleep 0.15; echo err$i >&2; sleep 0.15; done;"
        "printf '\\xe2\\x82'; sleep 0.2; printf '\\xac'; exit 4"
    )
    raw = json.dumps({"cmd": cmd, "stream": True}).encode()
    h = signed_headers(agent.key, "POST", "/api/v2/exec", raw)
    with httpx.stream("POST", agent.url + "/api/v2/exec", content=raw, headers=h) as resp:
        assert resp.headers["content-type"] == "application/x-ndjson"
        assert resp.headers["transfer-encoding"] == "chunked"
        events = [json.loads(line) for line in resp.iter_lines()]
    assert events[0]["event"] == "started" and events[-1]["event"] == "exit"
    assert events[-1]["exit_code"] == 4 and "stdout" not in events[-1]
    middle = [(e["event"], e["data"]) for e in events[1:-1]]
    assert [d for _, d in middle] == ["out1\n", "err1\n", "out2\n", "err2\n", "out3\n", "err3\n",
                                      "€"]  # fmt: skip
    assert [k for k, _ in middle] == ["stdout", "stderr"] * 3 + ["stdout"]


def test_idempotent_id_never_reruns(agent: Agent, tmp_path: Path) -> None:
    counter = tmp_path / "counter"
    body = {"cmd": f"echo run >> {counter}; sleep 0.5; echo done", "id": "once-1"}
    results: list[dict] = []

    def call() -> None:
        results.append(agent.exec(**body))

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counter.read_text() == "run\n"
    assert {r["id"] for r in results} == {"once-1"}
    assert all(r["stdout"] == "done\n" for r in results)
    assert agent.exec(**body)["started_at"] == results[0]["started_at"]
    assert agent.exec(**body, timeout=99)["stdout"] == "done\n"  # timeout is not identity
    r = agent.request("POST", "/api/v2/exec", {**body, "cmd": "echo other"})
    assert r.status_code == 409 and r.json()["error"] == "conflict"
    for change in ({"stdin": "x"}, {"env": {"A": "1"}}, {"cwd": "/tmp"}):
        assert agent.request("POST", "/api/v2/exec", {**body, **change}).status_code == 409
    assert counter.read_text() == "run\n"


def test_concurrency_limit(agent_factory) -> None:
    agent = agent_factory("--max-concurrency", "2")
    streams = [start_stream(agent, {"cmd": "sleep 30", "id": f"busy{i}"}) for i in range(2)]
    r = agent.request("POST", "/api/v2/exec", {"cmd": "true"})
    assert r.status_code == 429 and r.json()["error"] == "too_many"
    # attaching to a running id is not a new execution
    assert agent.request("GET", "/api/v2/exec/busy0").json()["state"] == "running"
    for i, (client, resp, _) in enumerate(streams):
        assert agent.request("DELETE", f"/api/v2/exec/busy{i}").json()["cancelled"]
        resp.close()
        client.close()
    assert agent.exec("true")["exit_code"] == 0


def test_status_wait_and_client_disconnect(agent: Agent) -> None:
    client, resp, _ = start_stream(agent, {"cmd": "sleep 0.6; echo late", "id": "w1"})
    resp.close()  # the client goes away; the run does not
    client.close()
    r = agent.request("GET", "/api/v2/exec/w1?wait=10").json()
    assert r["state"] == "finished" and r["stdout"] == "late\n"
    assert agent.request("GET", "/api/v2/exec/w1?wait=x").status_code == 400


def test_background_child_holding_stdout_does_not_hang_the_run(agent: Agent, tmp_path) -> None:
    pidfile = tmp_path / "bg"
    t0 = time.monotonic()
    r = agent.exec(f"sleep 30 & echo $! > {pidfile}; echo started")
    assert r["exit_code"] == 0 and r["stdout"] == "started\n"
    assert time.monotonic() - t0 < 3
    pid = int(pidfile.read_text())
    assert pid_alive(pid)  # left alone: a command may start daemons
    os.kill(pid, signal.SIGKILL)


def test_a_request_whose_client_left_before_it_started_is_not_run(
    agent: Agent, tmp_path: Path
) -> None:
    # The agent is stopped (a frozen host) while a client sends a run and, tired of waiting,
    # hangs up. When the agent wakes, the request and the hang-up are both in its socket: it
    # must not start a command its sender has already given up on (and reported as not run).
    import socket

    marker = tmp_path / "ran"
    assert agent.proc is not None
    for run_id in ("gone1", None):  # with an id, and without one
        body = json.dumps({"cmd": f"touch {marker}", **({"id": run_id} if run_id else {})})
        raw = body.encode()
        h = signed_headers(agent.key, "POST", "/api/v2/exec", raw)
        head = "".join(f"{k}: {v}\r\n" for k, v in h.items())
        request = (
            f"POST /api/v2/exec HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(raw)}\r\n{head}\r\n"
        ).encode() + raw
        os.kill(agent.proc.pid, signal.SIGSTOP)
        try:
            with socket.create_connection(("127.0.0.1", agent.port), timeout=5) as s:
                s.sendall(request)
            time.sleep(0.2)  # the FIN is in the stopped agent's socket too
        finally:
            os.kill(agent.proc.pid, signal.SIGCONT)
        time.sleep(0.5)
        assert not marker.exists()
        assert "client gone before the run started" in agent.log
    r = agent.request("GET", "/api/v2/exec/gone1")
    assert r.status_code == 404  # never journalled: a re-attach finds no record
    # A client that stays gets its run as ever.
    assert agent.exec(f"touch {marker}")["exit_code"] == 0 and marker.exists()

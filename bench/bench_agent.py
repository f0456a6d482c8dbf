"""Agent benchmark: round trip of a signed `true` exec on a kept-alive connection, beside
the floor (spawning `bash -c true` directly from Python) measured in the same run, what
making each run's journal entry durable costs (a second agent with `journal_fsync = false`,
interleaved), and the agent's resident memory idle and under 32 concurrent runs. State dirs
are on /var/tmp (a real disk: on tmpfs fsync costs nothing).

    .venv/bin/python bench/bench_agent.py [N]

Targets (issue 2): p50 within 2x of the floor; idle RSS under 20 MB.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import py_compile
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import table, write_section
from kernel.agent import signed_headers
from kernel.agent_client import AsyncAgentClient

AGENT_PY = Path(__file__).resolve().parent.parent / "src" / "kernel" / "agent.py"
KEY = "ab" * 32


def rss_kb(pid: int) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", text).group(1))  # type: ignore[union-attr]


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[int(len(ordered) * 0.99) - 1]


def floor(n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run(["bash", "-c", "true"], check=True)
        out.append(time.perf_counter() - t)
    return out


def start_agent(tmp: Path, name: str, *extra: str) -> tuple[subprocess.Popen[bytes], int, int]:
    """An agent as its unit runs it (byte-compiled module, `-S -m`); (process, port, keeper
    pid)."""
    lib = tmp / "lib"
    if not (lib / "kernel_agent.py").exists():
        lib.mkdir()
        shutil.copy(AGENT_PY, lib / "kernel_agent.py")
        py_compile.compile(str(lib / "kernel_agent.py"), doraise=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log_path = tmp / f"{name}.log"
    with open(log_path, "wb") as log:
        agent = subprocess.Popen(
            [sys.executable, "-S", "-m", "kernel_agent", "--config", "/dev/null",
             "--listen", f"127.0.0.1:{port}", "--key-file", str(tmp / "key"),
             "--state-dir", str(tmp / name), "--max-concurrency", "64", *extra],
            stdout=log, stderr=log, env={**os.environ, "PYTHONPATH": str(lib)},
        )  # fmt: skip
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz").text == "ok":
                break
        except httpx.HTTPError:
            time.sleep(0.05)
    return agent, port, int(re.findall(r"keeper pid (\d+)", log_path.read_text())[0])


def filesystem(path: Path) -> str:
    """The type of the filesystem holding ``path`` (stat -f says ext2/ext3 for ext4)."""
    r = subprocess.run(
        ["findmnt", "-n", "-o", "FSTYPE", "-T", str(path)], capture_output=True, text=True
    )
    return r.stdout.strip() or "unknown"


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 400
    base_dir = "/var/tmp" if os.path.isdir("/var/tmp") else None
    tmp = Path(tempfile.mkdtemp(prefix="bench-agent-", dir=base_dir))
    (tmp / "key").write_text(KEY)
    fs = filesystem(tmp)
    agent, port, keeper = start_agent(tmp, "state")
    nosync, nosync_port, nosync_keeper = start_agent(tmp, "nosync", "--journal-fsync", "false")
    url = f"http://127.0.0.1:{port}"
    client = httpx.Client(timeout=60)

    def exec_true(cmd: str = "true") -> dict:
        body = json.dumps({"cmd": cmd}).encode()
        h = signed_headers(KEY, "POST", "/api/v2/exec", body)
        r = client.post(url + "/api/v2/exec", content=body, headers=h)
        assert r.status_code == 200 and r.json()["exit_code"] == 0, r.text
        return r.json()

    lean = http.client.HTTPConnection("127.0.0.1", port)
    lean_nosync = http.client.HTTPConnection("127.0.0.1", nosync_port)

    def exec_lean(conn: http.client.HTTPConnection = lean) -> None:
        body = b'{"cmd": "true"}'
        h = signed_headers(KEY, "POST", "/api/v2/exec", body)
        conn.request("POST", "/api/v2/exec", body=body, headers=h)
        r = conn.getresponse()
        data = r.read()
        assert r.status == 200 and b'"exit_code": 0' in data, data

    loop = asyncio.new_event_loop()
    aclient = AsyncAgentClient(url, KEY, timeout=60)

    async def exec_async(count: int) -> list[float]:
        out = []
        for _ in range(count):
            t = time.perf_counter()
            r = await aclient.exec("true")
            out.append(time.perf_counter() - t)
            assert r.exit_code == 0, r
        return out

    try:
        for _ in range(20):  # warm up all
            exec_true()
            exec_lean()
            exec_lean(lean_nosync)
        loop.run_until_complete(exec_async(20))
        floor(20)
        time.sleep(1)
        idle_fresh = rss_kb(agent.pid)
        rtt, rtt_lean, rtt_nosync, rtt_async, base = [], [], [], [], []
        for _ in range(n // 50):  # interleave so all see the same machine load
            base += floor(50)
            for _ in range(50):
                t = time.perf_counter()
                exec_true()
                rtt.append(time.perf_counter() - t)
            for _ in range(50):
                t = time.perf_counter()
                exec_lean()
                rtt_lean.append(time.perf_counter() - t)
            for _ in range(50):
                t = time.perf_counter()
                exec_lean(lean_nosync)
                rtt_nosync.append(time.perf_counter() - t)
            rtt_async += loop.run_until_complete(exec_async(50))
        time.sleep(1)
        idle_agent, idle_keeper = rss_kb(agent.pid), rss_kb(keeper)

        peak = {"agent": 0, "keeper": 0}
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                peak["agent"] = max(peak["agent"], rss_kb(agent.pid))
                peak["keeper"] = max(peak["keeper"], rss_kb(keeper))
                time.sleep(0.05)

        def one(i: int) -> None:
            with httpx.Client(timeout=60) as c:
                body = json.dumps({"cmd": f"echo {i}; sleep 2"}).encode()
                h = signed_headers(KEY, "POST", "/api/v2/exec", body)
                assert c.post(url + "/api/v2/exec", content=body, headers=h).status_code == 200

        sampler = threading.Thread(target=sample)
        sampler.start()
        workers = [threading.Thread(target=one, args=(i,)) for i in range(32)]
        t0 = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        wall32 = time.perf_counter() - t0
        stop.set()
        sampler.join()
    finally:
        loop.run_until_complete(aclient.aclose())
        loop.close()
        client.close()
        lean.close()
        lean_nosync.close()
        for proc, keeper_pid in ((agent, keeper), (nosync, nosync_keeper)):
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)
            os.kill(keeper_pid, signal.SIGTERM)
        shutil.rmtree(tmp, ignore_errors=True)

    f50, f99 = percentiles(base)
    a50, a99 = percentiles(rtt)
    l50, l99 = percentiles(rtt_lean)
    u50, u99 = percentiles(rtt_nosync)
    s50, s99 = percentiles(rtt_async)
    rows = [
        ["floor: `bash -c true` from Python", f"{f50 * 1000:.2f}", f"{f99 * 1000:.2f}", "1.00x"],
        ["signed exec `true`, http.client kept-alive", f"{l50 * 1000:.2f}",
         f"{l99 * 1000:.2f}", f"{l50 / f50:.2f}x"],
        ["same, `journal_fsync = false` (no durability)", f"{u50 * 1000:.2f}",
         f"{u99 * 1000:.2f}", f"{u50 / f50:.2f}x"],
        ["signed exec `true`, httpx kept-alive", f"{a50 * 1000:.2f}", f"{a99 * 1000:.2f}",
         f"{a50 / f50:.2f}x"],
        ["signed exec `true`, AsyncAgentClient (wire.py)", f"{s50 * 1000:.2f}",
         f"{s99 * 1000:.2f}", f"{s50 / f50:.2f}x"],
    ]  # fmt: skip
    mem = [
        ["idle, after start-up and 40 runs", f"{idle_fresh / 1024:.1f}", "-"],
        [
            f"idle, after {2 * n + 40} runs (kept: up to 1000)",
            f"{idle_agent / 1024:.1f}",
            f"{idle_keeper / 1024:.1f}",
        ],
        [
            "32 concurrent runs (peak)",
            f"{peak['agent'] / 1024:.1f}",
            f"{peak['keeper'] / 1024:.1f}",
        ],
    ]
    body = (
        f"{n} sequential round trips each, interleaved in batches of 50; every client signs "
        "every request. The server talks to agents through `AsyncAgentClient` (our wire.py); "
        "httpx is the sync client's library.\n\n"
        + table(["what", "p50 ms", "p99 ms", "p50 vs floor"], rows)
        + f"\n\nMaking each run's journal entry durable before it starts (fdatasync of the "
        f"entry, fsync of its directory) costs {(l50 - u50) * 1000:.2f} ms at p50 "
        f"({(l99 - u99) * 1000:.2f} ms at p99), state dir on {fs} (this machine's "
        "virtual disk; a disk without a write cache pays more)."
        + "\n\nResident memory (VmRSS, MB); the keeper is the agent's forked run owner.\n\n"
        + table(["state", "agent", "keeper"], mem)
        + f"\n\n32 concurrent `sleep 2` runs finished in {wall32:.2f} s wall.\n"
        + "Targets: p50 within 2x of the floor; idle agent RSS under 20 MB.\n"
    )
    body += (
        "The agent runs as its systemd unit starts it (`python3 -S -m kernel_agent`: "
        "byte-compiled, no site-packages).\n"
    )
    write_section("agent", "Agent: exec round trip and memory", body)


if __name__ == "__main__":
    main()

"""A real nginx (Debian's) in front of kernel-server processes, configured with the server block
of docs/reverse-proxy.md — so the tests prove the documented settings, not a test-only copy.
The block is used as written except what a test cannot have: TLS (the listen lines, the
``ssl_*`` directives and the redirect from port 80 go; it listens on a loopback port) and the
upstream's servers (the replicas under test)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from support.procs import free_port

DOC = Path(__file__).resolve().parents[2] / "docs" / "reverse-proxy.md"


def documented_block() -> str:
    """The first ```nginx block of docs/reverse-proxy.md."""
    found = re.search(r"```nginx\n(.*?)```", DOC.read_text(), re.S)
    assert found, f"no nginx block in {DOC}"
    return found.group(1)


def for_test(block: str, upstreams: Sequence[str], port: int) -> str:
    """The documented block, on ``127.0.0.1:port`` over plain HTTP, to ``upstreams``."""
    # The redirect from port 80 is a server block of its own: the first one.
    block = re.sub(r"server \{\n    listen 80;.*?\n\}\n", "", block, count=1, flags=re.S)
    lines = []
    for line in block.splitlines():
        stripped = line.strip()
        if stripped.startswith(("listen ", "ssl_")):
            continue
        if stripped.startswith("server 127.0.0.1:8002"):  # the upstream's one server
            lines += [f"    server {u} max_fails=1 fail_timeout=2s;" for u in upstreams]
            continue
        lines.append(line)
        if stripped.startswith("server_name "):
            lines.append(f"    listen 127.0.0.1:{port};")
    return "\n".join(lines) + "\n"


class Nginx:
    """nginx as a child process (``daemon off``), stopped by its pid."""

    def __init__(self, workdir: Path, upstreams: Sequence[str]) -> None:
        self.dir = workdir
        self.port = free_port("127.0.0.1")
        self.url = f"http://127.0.0.1:{self.port}"
        self.upstreams = list(upstreams)
        self.proc: subprocess.Popen[bytes] | None = None

    def config(self) -> str:
        d = self.dir
        temp = "\n".join(
            f"    {kind}_temp_path {d / kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        user = "user root;\n" if os.geteuid() == 0 else ""
        return (
            f"{user}worker_processes 1;\ndaemon off;\npid {d / 'nginx.pid'};\n"
            f"error_log {d / 'error.log'} info;\n"
            "events { worker_connections 1024; }\n"
            "http {\n"
            f"    access_log {d / 'access.log'};\n{temp}\n"
            + for_test(documented_block(), self.upstreams, self.port)
            + "}\n"
        )

    def start(self, timeout: float = 15) -> Nginx:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        self.dir.mkdir(parents=True, exist_ok=True)
        conf = self.dir / "nginx.conf"
        conf.write_text(self.config())
        check = subprocess.run(
            [binary, "-t", "-q", "-p", str(self.dir), "-c", str(conf)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert check.returncode == 0, check.stderr + "\n" + conf.read_text()
        with open(self.dir / "stderr.log", "ab") as err:
            self.proc = subprocess.Popen(
                [binary, "-p", str(self.dir), "-c", str(conf)], stdout=err, stderr=err
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                httpx.get(self.url + "/healthz", timeout=1)
                return self
            except httpx.TransportError:
                assert self.proc.poll() is None, self.log
                time.sleep(0.05)
        raise RuntimeError(f"nginx did not start:\n{self.log}")

    @property
    def log(self) -> str:
        path = self.dir / "error.log"
        return path.read_text(errors="replace")[-5000:] if path.exists() else ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            workers = _children(self.proc.pid)
            self.proc.send_signal(signal.SIGTERM)  # fast shutdown: open streams are cut
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                for pid in workers:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                self.proc.kill()
                self.proc.wait(5)


def _children(pid: int) -> list[int]:
    """The pids whose parent is ``pid`` (nginx's workers), from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append(int(stat.parent.name))
    return found

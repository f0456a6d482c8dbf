"""A swarm of simulated agents in one process: a load generator for the server (issue 14).

A real agent costs 15-30 MB, so ten thousand of them do not fit on one machine. This serves
thousands of simulated hosts from ONE asyncio process, in the spirit of Salt's minion swarm:
each host has its own loopback address (127.x.y.z: Linux routes all of 127/8 to ``lo``, so
they need no set-up), its own agent key, its own nonces and runs. What the server sees is the
agent's protocol (ARCHITECTURE.md §2), checked as the agent checks it — the very functions of
``kernel.agent`` (`verify_signature`, `NonceCache`, `parse_json_body`, `parse_exec_request`,
the error bodies) — with the commands *simulated*: nothing runs. The status probe is answered
with a recorded real probe output (tests/data/probe/full-host-systemd.json) varied per host
and per probe (hostname, CPU counters, load, memory, uptime, disk use, which catalogue units
are installed); the join check with the recorded check sections; other commands with a few
canned answers (``uptime``, ``hostname``, ``echo``, ``true``, ``false``, ``exit N``,
``sleep N``; anything else exits 0 with no output), each after a realistic delay.

A BENCHMARK TOOL ONLY: no test may use it in place of real agents (the test suite's agents are
real processes, tests/support/agents.py and the testbed).

    .venv/bin/python bench/swarm.py serve --hosts 10000 --hosts-file /tmp/swarm.json
    .venv/bin/python bench/swarm.py register --hosts-file /tmp/swarm.json \\
        --server http://127.0.0.1:8002 --token TOKEN [--count 1000] [--parallel 32]

docs/benchmarks.md, "The swarm", says what is simulated and how faithfully.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import json
import os
import random
import re
import resource
import shlex
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kernel import agent as ka
from kernel.server.status.sections import SECTIONS

ROOT = Path(__file__).resolve().parent.parent
PROBES = ROOT / "tests" / "data" / "probe"
RECORDING = PROBES / "full-host-systemd.json"  # a real full host (systemd PID 1), via its agent
DEFAULT_BASE = "127.64.0.1"
MAX_HEAD = 64 * 1024
IDLE_TIMEOUT = ka._IDLE_TIMEOUT  # as the agent: a kept-alive connection may idle this long
REQUEST_TIMEOUT = 30.0  # the agent's request_timeout: a started request must arrive by then
CANCEL_DELAY = 0.005  # a cancelled run's process group takes about this long to go

# ------------------------------------------------------------------------- pure: addresses


def address(index: int, base: str = DEFAULT_BASE) -> str:
    """The loopback address of host ``index`` (0-based): ``base`` + index, skipping addresses
    whose last byte is 0 or 255 (valid on lo, but they read like network and broadcast)."""
    b = int.from_bytes(socket.inet_aton(base), "big")
    if b >> 24 != 127 or b & 0xFF in (0, 255):
        raise ValueError(f"{base} is not a loopback (127/8) host address")
    pos = (b & 0xFF) - 1 + index  # 254 usable addresses per /24
    n = ((b >> 8) + pos // 254) << 8 | (pos % 254 + 1)
    if n >> 24 != 127:
        raise ValueError("out of the loopback range")
    return socket.inet_ntoa(n.to_bytes(4, "big"))


def host_key(seed: str, index: int) -> str:
    """Host ``index``'s agent key (64 hex chars), derived from the swarm's secret seed: every
    host has its own, and one host's key says nothing about another's."""
    return hashlib.sha256(f"kernel-swarm:{seed}:{index}".encode()).hexdigest()


def host_name(index: int, prefix: str = "swarm-") -> str:
    return f"{prefix}{index:05d}"


# ----------------------------------------------------------------- pure: recorded outputs


@dataclass(frozen=True)
class Recorded:
    """A recorded probe output cut into its sections: name -> (content, rc, stderr)."""

    sections: dict[str, tuple[str, int, str]]
    units: dict[str, str]  # unit -> its `systemctl show` block, as recorded

    @classmethod
    def load(cls, path: Path = RECORDING, extra: Path = PROBES / "sections") -> Recorded:
        output = json.loads(path.read_text())["output"]
        sections = split_sections(output)
        # The join check also asks for bash's and systemd's versions (not in a probe):
        # the recorded real texts of this machine (tests/data/probe/sections/*.json).
        for name in ("bash", "systemd-version"):
            case = json.loads((extra / f"{name}.json").read_text())["cases"][0]
            sections.setdefault(name, (case["text"], 0, ""))
        units: dict[str, str] = {}
        for block in sections.get("units", ("", 0, ""))[0].split("\n\n"):
            props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
            for name in props.get("Names", "").split():
                units[name] = block.strip("\n")
        return cls(sections, units)


_MARK = re.compile(r"^@@kernel-probe(-rc|-stderr|-end)?(?: ([A-Za-z0-9_.-]+))?(?: (-?\d+))?@@$")


def split_sections(output: str) -> dict[str, tuple[str, int, str]]:
    """A probe's output as {section: (content, exit code, stderr)} (the format of
    docs/status.md; the server's own parser is kernel.server.status.probe)."""
    found: dict[str, list[Any]] = {}
    current: list[str] | None = None
    for line in output.split("\n"):
        m = _MARK.match(line)
        if m is None:
            if current is not None:
                current.append(line)
            continue
        kind, name, num = m.groups()
        current = None
        if kind == "-end" or name is None:
            continue
        entry = found.setdefault(name, [[], 0, []])
        if kind is None:
            current = entry[0]
        elif kind == "-rc":
            entry[1] = int(num or 0)
        else:
            current = entry[2]
    return {
        name: ("\n".join(c).strip("\n"), rc, "\n".join(e).strip("\n"))
        for name, (c, rc, e) in found.items()
    }


@dataclass(frozen=True)
class Plan:
    """What a probe or check script asks for: its sections in order, systemd, the units."""

    sections: tuple[str, ...]
    systemd: bool
    units: tuple[str, ...]


_UNITS_RE = re.compile(r"@@kernel-probe units-requested@@\\n'\nprintf '%s\\n' ([^\n]*)\n")


def plan_of(cmd: str) -> Plan | None:
    """The plan of a probe/check script built by kernel.server.status.probe, or None if
    ``cmd`` is not one. Sections are found by their own bash line (the server's table)."""
    if "@@kernel-probe" not in cmd:
        return None
    names = tuple(s.name for s in SECTIONS if s.bash in cmd)
    units: tuple[str, ...] = ()
    m = _UNITS_RE.search(cmd)
    if m:
        units = tuple(shlex.split(m.group(1)))
    return Plan(names, "is-system-running" in cmd, units)


def _section(name: str, content: str, rc: int = 0, stderr: str = "") -> str:
    text = f"@@kernel-probe {name}@@\n{content}\n" if content else f"@@kernel-probe {name}@@\n"
    text += f"\n@@kernel-probe-rc {name} {rc}@@\n"
    if stderr:
        text += f"@@kernel-probe-stderr {name}@@\n{stderr}\n"
    return text


@dataclass
class HostLook:
    """What makes one simulated host differ from the recording (fixed per host)."""

    name: str
    busy: float  # fraction of CPU time not idle
    load: float
    mem_used: float  # fraction of memory in use
    disk_used: float  # fraction of the root filesystem in use
    boot: float  # unix time it "booted"
    installed: frozenset[str]  # catalogue units installed (and active) here
    failed: frozenset[str]

    @classmethod
    def make(cls, name: str, rng: random.Random, now: float) -> HostLook:
        return cls(
            name=name,
            busy=rng.uniform(0.02, 0.6),
            load=rng.uniform(0.0, 3.0),
            mem_used=rng.uniform(0.05, 0.9),
            disk_used=rng.uniform(0.01, 0.8),
            boot=now - rng.uniform(3600, 90 * 86400),
            installed=frozenset(),
            failed=frozenset(),
        )


def render_probe(rec: Recorded, plan: Plan, look: HostLook, now: float, rng: random.Random) -> str:
    """The output a host gives for ``plan``: the recorded sections, this host's numbers."""
    out = [_section("version", "1")]
    s = rec.sections
    up = max(60.0, now - look.boot)
    ncpu = int(s.get("nproc", ("2", 0, ""))[0] or 2)
    for name in plan.sections:
        content, rc, err = s.get(name, ("", 1, f"cannot read {name}"))
        if name == "hostname":
            content = look.name
        elif name == "cpu":
            total = int(up * 100 * ncpu)
            busy = int(total * look.busy)
            user, system = busy * 3 // 4, busy // 4
            idle = total - busy
            content = f"cpu  {user} 0 {system} {idle} {idle // 400} 0 {busy // 100} 0 0 0"
        elif name == "loadavg":
            jig = rng.uniform(0.8, 1.2)
            la = [look.load * jig, look.load, look.load * 0.9]
            content = f"{la[0]:.2f} {la[1]:.2f} {la[2]:.2f} 1/{rng.randint(90, 400)} 4242"
        elif name == "meminfo":
            content = _meminfo(content, look.mem_used * rng.uniform(0.97, 1.03))
        elif name == "uptime":
            content = f"{up:.2f} {up * ncpu * (1 - look.busy):.2f}"
        elif name == "df":
            content = _df(content, look.disk_used)
        out.append(_section(name, content, rc, err))
    if plan.systemd:
        state = "degraded" if look.failed & set(plan.units) else "running"
        out.append(_section("systemd", state, 0 if state == "running" else 1))
        if plan.units:
            out.append(_section("units-requested", "\n".join(plan.units)))
            blocks = [_unit_block(rec, look, u) for u in plan.units]
            out.append(_section("units", "\n\n".join(blocks)))
    out.append("@@kernel-probe-end@@\n")
    return "".join(out)


def _meminfo(text: str, used: float) -> str:
    m = re.search(r"^MemTotal:\s+(\d+) kB", text, re.M)
    if not m:
        return text
    total = int(m.group(1))
    avail = int(total * (1 - min(max(used, 0.0), 1.0)))
    text = re.sub(r"^(MemAvailable:\s+)\d+", lambda x: f"{x.group(1)}{avail}", text, flags=re.M)
    return re.sub(
        r"^(MemFree:\s+)\d+", lambda x: f"{x.group(1)}{avail * 9 // 10}", text, flags=re.M
    )


def _df(text: str, used: float) -> str:
    lines = text.split("\n")
    out = lines[:1]
    for line in lines[1:]:
        parts = line.split()
        if len(parts) >= 7 and parts[2].isdigit():
            size = int(parts[2])
            u = int(size * used)
            parts[3], parts[4], parts[5] = str(u), str(size - u), f"{round(used * 100)}%"
            line = " ".join(parts)
        out.append(line)
    return "\n".join(out)


def _unit_block(rec: Recorded, look: HostLook, unit: str) -> str:
    if unit in rec.units and unit not in look.installed | look.failed:
        return rec.units[unit]
    if unit in look.failed:
        load, active, sub, enabled = "loaded", "failed", "failed", "enabled"
    elif unit in look.installed:
        load, active, sub, enabled = "loaded", "active", "running", "enabled"
    else:
        load, active, sub, enabled = "not-found", "inactive", "dead", ""
    return (
        f"Id={unit}\nNames={unit}\nLoadState={load}\nActiveState={active}\n"
        f"SubState={sub}\nUnitFileState={enabled}"
    )


# --------------------------------------------------------------- pure: other commands


@dataclass(frozen=True)
class Outcome:
    """What a simulated command does: how long it takes, its exit and its output."""

    seconds: float
    exit_code: int = 0
    stdout: str = ""
    stderr: str = ""


def simulate(cmd: str, look: HostLook, now: float, exec_delay: float) -> Outcome:
    """A few canned commands; anything else exits 0 with no output after ``exec_delay``."""
    try:
        words = shlex.split(cmd)
    except ValueError:
        words = cmd.split()
    first = words[0] if words else ""
    if first == "sleep" and len(words) == 2:
        try:
            return Outcome(float(words[1]))
        except ValueError:
            return Outcome(exec_delay, 1, "", f"sleep: invalid time interval '{words[1]}'\n")
    if first in ("true", ":") and len(words) == 1:
        return Outcome(exec_delay)
    if first == "false" and len(words) == 1:
        return Outcome(exec_delay, 1)
    if first == "exit" and len(words) <= 2:
        code = int(words[1]) if len(words) == 2 and words[1].isdigit() else 0
        return Outcome(exec_delay, code & 255)
    if first == "echo":
        return Outcome(exec_delay, 0, " ".join(words[1:]) + "\n")
    if first == "hostname" and len(words) == 1:
        return Outcome(exec_delay, 0, look.name + "\n")
    if first == "uptime" and len(words) == 1:
        up = max(60, int(now - look.boot))
        days, rest = divmod(up, 86400)
        clock = time.strftime("%H:%M:%S", time.gmtime(now))
        la = look.load
        line = (
            f" {clock} up {days} days, {rest // 3600:2d}:{rest % 3600 // 60:02d},  0 users,  "
            f"load average: {la:.2f}, {la:.2f}, {la * 0.9:.2f}\n"
        )
        return Outcome(exec_delay, 0, line)
    return Outcome(exec_delay)


def parse_range(text: str) -> tuple[float, float]:
    """'50-200' or '5' (milliseconds) -> (low, high) in seconds."""
    lo, _, hi = text.partition("-")
    a = float(lo) / 1000
    b = float(hi) / 1000 if hi else a
    if not 0 <= a <= b:
        raise ValueError(f"bad range {text!r}")
    return a, b


# ------------------------------------------------------------------------------ the hosts


@dataclass
class Run:
    """One simulated execution (the agent's RunStore entry)."""

    id: str
    fingerprint: str
    started_at: float
    timeout: float
    outcome: Outcome | None = None
    state: str = "running"
    status: dict[str, Any] = field(default_factory=dict)
    waiters: list[Callable[[], None]] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None

    @property
    def done(self) -> bool:
        return self.state != "running"

    def result(self, output: bool = True) -> dict[str, Any]:
        """The agent's RunStore.result shape."""
        st = self.status
        r: dict[str, Any] = {
            "id": self.id,
            "state": self.state,
            "exit_code": st.get("exit_code"),
            "signal": st.get("signal"),
            "timed_out": bool(st.get("timed_out", False)),
            "cancelled": bool(st.get("cancelled", False)),
            "truncated": False,
            "duration": st.get("duration"),
            "started_at": self.started_at,
            "finished_at": st.get("finished_at"),
        }
        if output:
            r["stdout"] = st.get("stdout", "") if self.done else ""
            r["stderr"] = st.get("stderr", "") if self.done else ""
        return r


class Host:
    __slots__ = ("index", "ip", "key", "look", "name", "nonces", "running", "runs", "seen")

    def __init__(self, index: int, ip: str, key: str, look: HostLook) -> None:
        self.index = index
        self.ip = ip
        self.key = key
        self.name = look.name
        self.look = look
        self.nonces = ka.NonceCache(None)  # in memory, as an agent whose state dir is gone
        self.runs: dict[str, Run] = {}
        self.running = 0
        self.seen = 0  # requests served


@dataclass
class Stats:
    requests: int = 0
    probes: int = 0
    execs: int = 0
    refused: int = 0
    connections: int = 0
    open: int = 0


class Swarm:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rec = Recorded.load()
        self.rng = random.Random(args.seed)
        self.probe_delay = parse_range(args.probe_ms)
        self.exec_delay = parse_range(args.exec_ms)
        self.cfg = ka.Config()  # the agent's defaults: limits, timeouts
        self.hosts: list[Host] = []
        self.finished: collections.OrderedDict[tuple[int, str], Run] = collections.OrderedDict()
        self.conns: set[HostProtocol] = set()
        self.stats = Stats()
        self.started = time.time()
        self.plans: dict[str, Plan | None] = {}
        self.delays: dict[int, float] = {}  # each host's own probe time (its distance and CPU)

    def make_hosts(self) -> None:
        now = time.time()
        units = [u.strip() for u in self.args.units.split(",") if u.strip()]
        first = self.args.first
        for i in range(first, first + self.args.hosts):
            rng = random.Random(f"{self.args.seed}:{i}")
            look = HostLook.make(host_name(i, self.args.prefix), rng, now)
            look.installed = frozenset(u for u in units if rng.random() < 0.5)
            look.failed = frozenset(
                u for u in units if u not in look.installed and rng.random() < 0.02
            )
            h = Host(i, address(i, self.args.base), host_key(self.args.seed, i), look)
            self.hosts.append(h)
            lo, hi = self.probe_delay
            self.delays[i] = rng.uniform(lo, hi)

    # -- runs ---------------------------------------------------------------------------------
    def submit(self, host: Host, spec: ka.ExecSpec) -> Run:
        fingerprint = spec.fingerprint()
        if spec.id is not None:
            existing = host.runs.get(spec.id) or self.finished.get((host.index, spec.id))
            if existing is not None:
                if existing.fingerprint != fingerprint:
                    raise ka.HttpError(
                        409, "conflict", f"id {spec.id} was used for another command"
                    )
                return existing
        if host.running >= self.cfg.max_concurrency:
            raise ka.HttpError(429, "too_many", f"{host.running} executions are already running")
        run_id = spec.id or os.urandom(12).hex()
        now = time.time()
        run = Run(run_id, fingerprint, round(now, 6), spec.timeout)
        plan = self.plans.get(spec.cmd, False)
        if plan is False:
            plan = self.plans[spec.cmd] = plan_of(spec.cmd)
            if len(self.plans) > 64:
                self.plans.pop(next(iter(self.plans)))
        if plan is not None:
            self.stats.probes += 1
            base = self.delays[host.index]
            delay = base * self.rng.uniform(0.95, 1.05)
            out = Outcome(delay, 0, render_probe(self.rec, plan, host.look, now, self.rng))
        else:
            self.stats.execs += 1
            lo, hi = self.exec_delay
            out = simulate(spec.cmd, host.look, now, self.rng.uniform(lo, hi))
        run.outcome = out
        host.runs[run_id] = run
        host.running += 1
        loop = asyncio.get_running_loop()
        if out.seconds > spec.timeout:
            run.timer = loop.call_later(spec.timeout, self._finish, host, run, "timeout")
        else:
            run.timer = loop.call_later(out.seconds, self._finish, host, run, "exit")
        return run

    def _finish(self, host: Host, run: Run, how: str) -> None:
        if run.done:
            return
        out = run.outcome or Outcome(0.0)
        now = time.time()
        st: dict[str, Any] = {
            "finished_at": round(now, 6),
            "duration": round(now - run.started_at, 6),
        }
        if how == "exit":
            st.update(exit_code=out.exit_code, stdout=out.stdout, stderr=out.stderr)
        else:  # killed: timeout or cancel (SIGTERM to the process group)
            st.update(exit_code=None, signal=15, stdout="", stderr="")
            st["timed_out" if how == "timeout" else "cancelled"] = True
        run.status = st
        run.state = "finished"
        if run.timer is not None:
            run.timer.cancel()
            run.timer = None
        host.running -= 1
        # Finished runs go to one LRU for all hosts (the agent keeps 1000 per host).
        host.runs.pop(run.id, None)
        self.finished[(host.index, run.id)] = run
        while len(self.finished) > self.args.keep_runs:
            self.finished.popitem(last=False)
        waiters, run.waiters = run.waiters, []
        for w in waiters:
            w()

    def cancel(self, host: Host, run: Run) -> None:
        if run.done:
            return
        if run.timer is not None:
            run.timer.cancel()
        run.timer = asyncio.get_running_loop().call_later(
            CANCEL_DELAY, self._finish, host, run, "cancel"
        )

    def get(self, host: Host, run_id: str) -> Run:
        run = host.runs.get(run_id) or self.finished.get((host.index, run_id))
        if run is None:
            raise ka.HttpError(404, "not_found", f"no execution with id {run_id[:128]}")
        return run

    def info(self, host: Host) -> dict[str, Any]:
        osr = dict(
            line.split("=", 1)
            for line in self.rec.sections["os-release"][0].splitlines()
            if "=" in line
        )
        uname = self.rec.sections["uname"][0].split()
        now = time.time()
        c = self.cfg
        return {
            "version": ka.VERSION,
            "protocol": ka.PROTOCOL,
            "hostname": host.name,
            "os": osr.get("PRETTY_NAME", "").strip('"'),
            "os_id": osr.get("ID", "").strip('"'),
            "os_version": osr.get("VERSION_ID", "").strip('"'),
            "kernel": uname[1] if len(uname) > 1 else "",
            "arch": uname[2] if len(uname) > 2 else "",
            "python": "3.11.2",
            "uptime": round(now - self.started, 3),
            "host_uptime": round(now - host.look.boot, 2),
            "pid": os.getpid(),
            "keeper_pid": None,
            "running": host.running,
            "tls": False,
            "legacy": False,
            "simulated": True,  # bench/swarm.py: not a real agent
            "limits": {
                "max_concurrency": c.max_concurrency,
                "max_output_bytes": c.max_output_bytes,
                "max_body_bytes": c.max_body_bytes,
                "default_timeout": ka.DEFAULT_TIMEOUT,
                "max_timeout": ka.MAX_TIMEOUT,
                "kill_grace": ka.KILL_GRACE,
                "request_timeout": c.request_timeout,
            },
        }

    # -- serving --------------------------------------------------------------------------------
    async def serve(self, ready: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        servers = []
        for h in self.hosts:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((h.ip, self.args.port))
            except OSError as e:
                sock.close()
                raise SystemExit(f"swarm: cannot bind {h.ip}:{self.args.port}: {e}") from None
            sock.listen(self.args.backlog)
            sock.setblocking(False)
            servers.append(await loop.create_server(lambda h=h: HostProtocol(self, h), sock=sock))
        ready()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        sweeper = asyncio.create_task(self._sweep())
        await stop.wait()
        sweeper.cancel()
        for srv in servers:
            srv.close()
        for c in list(self.conns):
            if c.transport is not None:
                c.transport.abort()

    async def _sweep(self) -> None:
        """Idle and stalled connections are closed, as the agent does; nonces expire."""
        last_compact = time.monotonic()
        while True:
            await asyncio.sleep(5)
            now = time.monotonic()
            for c in list(self.conns):
                if c.busy:
                    continue
                limit = REQUEST_TIMEOUT if c.buf else IDLE_TIMEOUT
                if now - c.last > limit and c.transport is not None:
                    c.transport.close()
            if now - last_compact > 60:
                last_compact = now
                for h in self.hosts:
                    h.nonces.compact()
            if self.args.stats:
                s = self.stats
                print(
                    f"swarm: {s.requests} requests, {s.probes} probes, {s.execs} execs, "
                    f"{s.refused} refused, {len(self.conns)} connections open",
                    file=sys.stderr,
                    flush=True,
                )


@dataclass
class Request:
    method: str
    target: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    close: bool


class HostProtocol(asyncio.Protocol):
    """One connection to one simulated host: HTTP/1.1, kept alive, one request at a time."""

    def __init__(self, swarm: Swarm, host: Host) -> None:
        self.swarm = swarm
        self.host = host
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.busy = False
        self.last = time.monotonic()
        self.continued = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.swarm.conns.add(self)
        self.swarm.stats.connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.swarm.conns.discard(self)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        if not self.buf:
            self.last = time.monotonic()  # a new request starts its clock
        self.buf += data
        if not self.busy:
            self._next()

    # -- reading ------------------------------------------------------------------------------
    def _next(self) -> None:
        while self.buf.startswith(b"\r\n"):  # blank lines between requests
            del self.buf[:2]
        if not self.buf or self.transport is None:
            return
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buf) > MAX_HEAD:
                self._fail(ka.HttpError(431, "too_large", "request head too large", close=True))
            return
        try:
            req = self._parse(end)
        except ka.HttpError as e:
            self._fail(e)
            return
        if req is None:
            return  # the body is still coming
        self.busy = True
        self.swarm.stats.requests += 1
        self.host.seen += 1
        try:
            self._dispatch(req)
        except ka.HttpError as e:
            if e.status == 401:
                self.swarm.stats.refused += 1
            self.send_error(e, req.close)
        except Exception as e:
            print(f"swarm: internal error on {req.method} {req.path}: {e!r}", file=sys.stderr)
            self.send_error(ka.HttpError(500, "internal", "internal error", close=True), True)

    def _parse(self, end: int) -> Request | None:
        head = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
        parts = head[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise ka.HttpError(400, "bad_request", "malformed request line", close=True)
        method, target, version = parts
        headers: dict[str, str] = {}
        if len(head) > 101:
            raise ka.HttpError(431, "too_large", "more than 100 headers", close=True)
        for raw in head[1:]:
            name, sep, value = raw.partition(":")
            name = name.strip().lower()
            if not sep or not name or " " in name:
                raise ka.HttpError(400, "bad_request", "malformed header line", close=True)
            value = value.strip()
            if name == "content-length" and headers.get(name, value) != value:
                raise ka.HttpError(400, "bad_request", "conflicting Content-Length", close=True)
            headers[name] = headers[name] + ", " + value if name in headers else value
        if not target.startswith("/"):
            raise ka.HttpError(400, "bad_request", "request target must be a path", close=True)
        limit = self.swarm.cfg.max_body_bytes
        start = end + 4
        te = headers.get("transfer-encoding", "").lower()
        length_text = headers.get("content-length")
        if te:
            if length_text is not None:
                raise ka.HttpError(
                    400, "bad_request", "Content-Length with Transfer-Encoding", close=True
                )
            if te != "chunked":
                raise ka.HttpError(400, "bad_request", "only chunked transfer encoding", close=True)
            self._continue(headers)
            got = dechunk(self.buf, start, limit)
            if got is None:
                return None
            body, stop = got
        else:
            length = 0
            if length_text is not None:
                if not ka._DIGITS_RE.match(length_text):
                    raise ka.HttpError(400, "bad_request", "bad Content-Length", close=True)
                length = int(length_text) if len(length_text) <= 19 else limit + 1
                if length > limit:
                    raise ka.HttpError(413, "too_large", f"body over {limit} bytes", close=True)
            if length:
                self._continue(headers)
            if len(self.buf) < start + length:
                return None
            body, stop = bytes(self.buf[start : start + length]), start + length
        del self.buf[:stop]
        self.continued = False
        conn = headers.get("connection", "").lower()
        close = conn == "close" or (version == "HTTP/1.0" and conn != "keep-alive")
        path, _, query = target.partition("?")
        return Request(method, target, path.partition("#")[0], query, headers, body, close)

    def _continue(self, headers: dict[str, str]) -> None:
        if headers.get("expect", "").lower() == "100-continue" and not self.continued:
            self.continued = True
            self._write(b"HTTP/1.1 100 Continue\r\n\r\n")

    # -- routes (kernel.agent AgentServer.dispatch, in the same order) --------------------------
    def _dispatch(self, req: Request) -> None:
        path = req.path
        if path == "/api/ExecCmd":
            raise ka.HttpError(404, "not_found", "the legacy API is off (set legacy_allow_ips)")
        if path == "/healthz":
            self._allow(req, ("GET", "HEAD"))
            return self.send(200, b"ok", "text/plain", req.close, head=req.method == "HEAD")
        if path == "/api/v2/exec":
            self._allow(req, ("POST",))
            handler = self.exec_
        elif path.startswith("/api/v2/exec/"):
            self._allow(req, ("GET", "DELETE"))
            handler = self.status if req.method == "GET" else self.cancel
        elif path == "/api/v2/info":
            self._allow(req, ("GET",))
            handler = self.info
        else:
            raise ka.HttpError(404, "not_found", f"no route {path[:200]}")
        self._authenticate(req)
        handler(req)

    @staticmethod
    def _allow(req: Request, methods: tuple[str, ...]) -> None:
        if req.method not in methods:
            raise ka.HttpError(
                405,
                "method_not_allowed",
                "{} only".format(" or ".join(methods)),
                close=bool(req.headers.get("content-length", "0") != "0"),
            )

    def _authenticate(self, req: Request) -> None:
        error, timestamp, nonce = ka.verify_signature(
            self.host.key, req.method, req.target, req.headers, req.body, time.time()
        )
        if error is None:
            error = self.host.nonces.add(nonce, timestamp)
        if error is not None:
            raise ka.HttpError(401, "unauthorized", error)

    def exec_(self, req: Request) -> None:
        spec = ka.parse_exec_request(ka.parse_json_body(req.body))
        run = self.swarm.submit(self.host, spec)
        if spec.stream:
            return self._stream(run, req.close)
        self._when_done(run, lambda: self.send_json(200, run.result(), req.close))

    def _stream(self, run: Run, close: bool) -> None:
        started = ka.json_bytes({"event": "started", "id": run.id, "started_at": run.started_at})
        head = (
            "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
            "Transfer-Encoding: chunked\r\n%s\r\n" % ("Connection: close\r\n" if close else "")
        )
        self._write(head.encode("latin-1") + ka._chunk(started + b"\n"))

        def end() -> None:
            out = b""
            st = run.status
            for name in ("stdout", "stderr"):
                if st.get(name):
                    out += ka.json_bytes({"event": name, "data": st[name]}) + b"\n"
            final = {"event": "exit", **run.result(output=False)}
            out += ka.json_bytes(final) + b"\n"
            self._write(ka._chunk(out) + b"0\r\n\r\n")
            self._done(close)

        self._when_done(run, end)

    def status(self, req: Request) -> None:
        run = self.swarm.get(self.host, req.path[len("/api/v2/exec/") :])
        wait = ka.parse_query(req.query).get("wait")
        seconds = 0.0
        if wait:
            try:
                seconds = min(max(float(wait[0]), 0.0), 300.0)
            except ValueError:
                seconds = -1.0
            if not 0 <= seconds <= 300:
                raise ka.HttpError(400, "bad_field", "wait: must be a number of seconds")
        if run.done or seconds == 0:
            return self.send_json(200, run.result(), req.close)
        answered = False

        def answer() -> None:
            nonlocal answered
            if not answered:
                answered = True
                timer.cancel()
                self.send_json(200, run.result(), req.close)

        timer = asyncio.get_running_loop().call_later(seconds, answer)
        run.waiters.append(answer)

    def cancel(self, req: Request) -> None:
        run = self.swarm.get(self.host, req.path[len("/api/v2/exec/") :])
        self.swarm.cancel(self.host, run)
        self._when_done(run, lambda: self.send_json(200, run.result(), req.close))

    def info(self, req: Request) -> None:
        self.send_json(200, self.swarm.info(self.host), req.close)

    # -- writing ------------------------------------------------------------------------------
    def _when_done(self, run: Run, then: Callable[[], None]) -> None:
        if run.done:
            then()
        else:
            run.waiters.append(then)

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def send(
        self, status: int, body: bytes, ctype: str = "application/json", close: bool = False,
        head: bool = False,
    ) -> None:  # fmt: skip
        reason = ka._REASONS.get(status, "Error")
        shut = "Connection: close\r\n" if close else ""
        text = (
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\n{shut}\r\n"
        )
        self._write(text.encode("latin-1") + (b"" if head else body))
        self._done(close)

    def send_json(self, status: int, data: Any, close: bool = False) -> None:
        self.send(status, ka.json_bytes(data), close=close)

    def send_error(self, err: ka.HttpError, close: bool = False) -> None:
        body = {"code": err.status, "error": err.slug, "msg": err.msg}
        self.send_json(err.status, body, close or err.close)

    def _fail(self, err: ka.HttpError) -> None:
        self.busy = True
        self.send_error(err, True)

    def _done(self, close: bool) -> None:
        self.last = time.monotonic()
        if close:
            if self.transport is not None:
                self.transport.close()
            return
        self.busy = False
        if self.buf:
            self._next()


def dechunk(buf: bytearray, start: int, limit: int) -> tuple[bytes, int] | None:
    """A chunked body from ``buf[start:]``: (body, end offset), or None if incomplete."""
    body = bytearray()
    pos = start
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size_line = bytes(buf[pos:eol]).split(b";")[0].strip()
        if not ka._HEX_RE.match(size_line):
            raise ka.HttpError(400, "bad_request", "bad chunk size", close=True)
        size = int(size_line, 16) if len(size_line) <= 16 else limit + 1
        pos = eol + 2
        if size == 0:
            while True:  # trailers, up to the blank line
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    return None
                if eol == pos:
                    return bytes(body), eol + 2
                pos = eol + 2
        if len(body) + size > limit:
            raise ka.HttpError(413, "too_large", f"body over {limit} bytes", close=True)
        if len(buf) < pos + size + 2:
            return None
        body += buf[pos : pos + size]
        pos += size + 2


# ------------------------------------------------------------------------------- the CLI


def raise_nofile(want: int) -> int:
    """Raise the open-file limit to ``want`` (the hard limit too, if we may); the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < want:
        try:
            nr_open = int(Path("/proc/sys/fs/nr_open").read_text())
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, nr_open), min(want, nr_open)))
        except (OSError, ValueError):
            pass  # not root: the hard limit stays
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def hosts_doc(swarm: Swarm) -> list[dict[str, Any]]:
    return [
        {
            "name": h.name,
            "address": h.ip,
            "agent_url": f"http://{h.ip}:{swarm.args.port}",
            "key": h.key,
        }
        for h in swarm.hosts
    ]


def cmd_serve(args: argparse.Namespace) -> int:
    # A listening socket per host, and a connection from each of the server's two pools
    # (the job runner's and the status poller's): run several swarms (--first) past that.
    limit = raise_nofile(3 * args.hosts + 2048)
    if limit < 3 * args.hosts + 64:
        print(
            f"swarm: open-file limit {limit} is low for {args.hosts} hosts (a listening socket"
            " and up to two connections each; split them with --first)",
            file=sys.stderr,
        )
    swarm = Swarm(args)
    swarm.make_hosts()
    if args.hosts_file:
        tmp = Path(args.hosts_file + ".tmp")
        tmp.write_text(json.dumps(hosts_doc(swarm)))
        os.chmod(tmp, 0o600)
        tmp.replace(args.hosts_file)

    def ready() -> None:
        print(f"swarm ready: {args.hosts} hosts from {swarm.hosts[0].ip} port {args.port}",
              flush=True)  # fmt: skip

    asyncio.run(swarm.serve(ready))
    return 0


def iter_hosts(path: str, start: int, count: int | None) -> Iterator[dict[str, Any]]:
    hosts = json.loads(Path(path).read_text())
    stop = len(hosts) if count is None else min(len(hosts), start + count)
    yield from hosts[start:stop]


def register(
    server: str, token: str, hosts: list[dict[str, Any]], parallel: int = 32,
    tags: Callable[[int], list[str]] | None = None, offset: int = 0,
) -> tuple[float, list[str]]:  # fmt: skip
    """Add ``hosts`` to a running server through the REST API (POST /api/v1/servers: the
    server checks each agent — info and the environment check — before it stores it), with
    ``parallel`` requests at once. Returns (seconds, errors)."""
    import concurrent.futures

    import httpx

    errors: list[str] = []
    limits = httpx.Limits(max_connections=parallel, max_keepalive_connections=parallel)
    with httpx.Client(
        base_url=server, timeout=120, limits=limits,
        headers={"Authorization": f"Bearer {token}"},
    ) as client:  # fmt: skip

        def add(i: int, h: dict[str, Any]) -> None:
            body = {"name": h["name"], "agent_url": h["agent_url"], "agent_key": h["key"]}
            if tags is not None:
                body["tags"] = tags(offset + i)
            r = client.post("/api/v1/servers", json=body)
            if r.status_code != 201:
                errors.append(f"{h['name']}: {r.status_code} {r.text[:200]}")

        t0 = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
            list(pool.map(add, range(len(hosts)), hosts))
        return time.monotonic() - t0, errors


def cmd_register(args: argparse.Namespace) -> int:
    hosts = list(iter_hosts(args.hosts_file, args.start, args.count))
    seconds, errors = register(args.server, args.token, hosts, args.parallel)
    for e in errors[:10]:
        print(e, file=sys.stderr)
    print(f"registered {len(hosts) - len(errors)} of {len(hosts)} in {seconds:.1f} s "
          f"({len(hosts) / max(seconds, 1e-9):.0f}/s)")  # fmt: skip
    return 1 if errors else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="serve the simulated hosts until SIGTERM/SIGINT")
    s.add_argument("--hosts", type=int, default=1000)
    s.add_argument("--base", default=DEFAULT_BASE, help="host 0's address (127/8)")
    s.add_argument(
        "--first",
        type=int,
        default=0,
        help="serve hosts FIRST.. (several swarms, one --seed, share a fleet)",
    )
    s.add_argument("--port", type=int, default=8001)
    s.add_argument("--prefix", default="swarm-", help="host names: PREFIX00042")
    s.add_argument("--seed", default=None, help="derives the hosts' keys (default: random)")
    s.add_argument("--hosts-file", help="write the hosts (name, address, agent_url, key) here")
    s.add_argument(
        "--probe-ms",
        default="50-200",
        help="a probe's time on a host, ms (each host draws its own in the range)",
    )
    s.add_argument("--exec-ms", default="2-5", help="time of any other command, ms")
    s.add_argument(
        "--units",
        default="sums.service,hello-web.service",
        help="units that are installed on about half of the hosts",
    )
    s.add_argument(
        "--keep-runs",
        type=int,
        default=20000,
        help="finished runs remembered (one LRU for all hosts)",
    )
    s.add_argument("--backlog", type=int, default=128)
    s.add_argument("--stats", action="store_true", help="a line of counters every 5 s")
    r = sub.add_parser("register", help="add the hosts to a running server (REST API)")
    r.add_argument("--hosts-file", required=True)
    r.add_argument("--server", required=True)
    r.add_argument("--token", default=os.environ.get("KERNEL_TOKEN", ""))
    r.add_argument("--start", type=int, default=0)
    r.add_argument("--count", type=int, default=None)
    r.add_argument("--parallel", type=int, default=32)
    return p  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        if args.seed is None:
            args.seed = os.urandom(16).hex()
        return cmd_serve(args)
    return cmd_register(args)


if __name__ == "__main__":
    sys.exit(main())

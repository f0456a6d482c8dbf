"""Kernel beside its peers: ``uptime`` on 1, 10, 50 and 100 light test hosts with
``kernel exec``, plain OpenSSH, parallel-ssh (Debian's command and the PyPI library), pyinfra,
Ansible (ad-hoc ``raw`` and ``command``) and the floor, in one run, on the same hosts.

Run as root: ``.venv/bin/python bench/bench_peers.py [--quick] [--hosts 1,10]``. Updates the
``peers`` section of docs/benchmarks.md. Installs the peers itself at pinned versions
(bench/_peers.py: apt for OpenSSH and Debian's parallel-ssh, a virtualenv under
~/.cache/kernel-bench for pyinfra, ansible-core and parallel-ssh). Each host runs its Kernel
agent and an sshd (in its network namespace and cgroup); the Kernel server is a real
``kernel-server`` process on loopback, the hosts enrolled by URL + key.

Every tool is a new process per run, timed from spawn to exit (its whole process tree
reaped): wall time, CPU (user + sys of the tree, from ``wait4``), the largest process's peak
RSS, and the tree's peak memory together (a memory cgroup the process starts in: anonymous
memory, kernel memory and page cache it newly charges). Runs of all tools alternate, so a
change of the machine's load touches every tool alike. For Kernel, the server's CPU during
each run (``/proc/<pid>/stat``) and the job's server side (created → finished, from its
timestamps) are kept too; for every tool, the hosts' CPU per run (their cgroups' usage).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import _peers
from _peers import SSH_PORT, SshHosts
from _report import table, write_section
from bench_cli import KERNEL, Server, compile_cli, last_job_id, server_side, wall_times
from kernel.testbed import Testbed, unsupported_reason
from kernel.testbed.system import cgroup_procs

SIZES = (1, 10, 50, 100)
RUNS = {1: 11, 10: 7, 50: 5, 100: 5}  # per tool; a tool whose warm-up took > SLOW s: SLOW_RUNS
SLOW, SLOW_RUNS = 4.0, 3
TARGET_1, TARGET_100, PEER_FACTOR, FLOOR_FACTOR = 0.060, 0.300, 7.0, 2.0
TICK = os.sysconf("SC_CLK_TCK")
TIME = "/usr/bin/time"  # GNU time (Debian's package `time`)

# The parallel-ssh library has no command of its own: this is its README's example.
PARALLEL_SSH_SCRIPT = """\
import sys
from pssh.clients import ParallelSSHClient

hosts = open(sys.argv[1]).read().split()
client = ParallelSSHClient(hosts, user="root", port=int(sys.argv[3]), pkey=sys.argv[2],
                           pool_size=len(hosts), num_retries=1)
output = client.run_command("uptime")
client.join(output)
failed = 0
for host_out in output:
    for line in host_out.stdout:
        print(host_out.host, line)
    failed += host_out.exit_code != 0
sys.exit(1 if failed else 0)
"""

# The floor and the OpenSSH loop: a shell starting one process per host at once, then
# waiting for each (exit status 1 if any failed).
FAN_OUT = (
    'pids=; for x; do {cmd} & pids="$pids $!"; done; '
    "rc=0; for p in $pids; do wait $p || rc=1; done; exit $rc"
)


@dataclass
class Sample:
    wall: float
    cpu: float  # user + sys of the process tree
    max_rss: int  # bytes, the largest process of the tree
    mem_peak: int | None  # bytes, the tree together (memory cgroup), if measurable
    hosts_cpu: float  # the test hosts' CPU during the run (agents/sshd, uptime), seconds
    server_cpu: float = 0.0  # Kernel only: kernel-server's CPU during the run


@dataclass
class Tool:
    name: str
    argv: Callable[[int], list[str]]
    env: dict[str, str] | None = None
    samples: dict[int, list[Sample]] = field(default_factory=dict)


class MemoryCgroup:
    """A memory cgroup the measured process joins before exec, for the peak of its whole
    tree: cgroup v1's ``memory.max_usage_in_bytes`` (reset before each run) or cgroup v2's
    ``memory.peak`` (a fresh group per run). None where neither is available."""

    def __init__(self) -> None:
        self.path: Path | None = None
        self.v1 = Path("/sys/fs/cgroup/memory")
        v2 = Path("/sys/fs/cgroup")
        name = f"kernel-bench-peers-{os.getpid()}"
        if (self.v1 / "memory.max_usage_in_bytes").exists():
            self.path = self.v1 / name
            self.kind = "v1"
        elif (v2 / "cgroup.subtree_control").is_file() and "memory" in (
            v2 / "cgroup.subtree_control"
        ).read_text():
            self.path = v2 / name
            self.kind = "v2"
        self._n = 0

    def prepare(self) -> Path | None:
        """The group for the next run, its peak reset."""
        if self.path is None:
            return None
        if self.kind == "v1":
            self.path.mkdir(exist_ok=True)
            with contextlib.suppress(OSError):
                (self.path / "memory.force_empty").write_text("0")  # last run's page cache
            (self.path / "memory.max_usage_in_bytes").write_text("0")
            return self.path
        self.close()
        self._n += 1
        self.path.mkdir()
        return self.path

    def peak(self) -> int | None:
        if self.path is None:
            return None
        left = (self.path / "cgroup.procs").read_text().split()
        if left:
            raise RuntimeError(f"processes left behind by a measured tool: {left}")
        f = "memory.max_usage_in_bytes" if self.kind == "v1" else "memory.peak"
        return int((self.path / f).read_text())

    def kill(self, pid: int) -> None:
        """SIGKILL ``pid`` and everything in the group (a measured tool's tree), reap it."""
        pids = {pid}
        if self.path is not None and (self.path / "cgroup.procs").exists():
            pids |= {int(p) for p in (self.path / "cgroup.procs").read_text().split()}
        for p in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        deadline = time.monotonic() + 5
        while self.path is not None and time.monotonic() < deadline:
            with contextlib.suppress(FileNotFoundError):
                if not (self.path / "cgroup.procs").read_text().split():
                    break
            time.sleep(0.02)

    def close(self) -> None:
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.rmdir()


def settle(bed: Testbed, baseline: int, timeout: float = 10) -> None:
    """Wait until the hosts run nothing but their agent and sshd again (the last run's
    sessions have closed), so one tool's tail never lands in the next tool's run."""
    deadline = time.monotonic() + timeout
    while len(cgroup_procs(bed.cgroup)) > baseline and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def usage_usec(cgroup: Path) -> int:
    for line in (cgroup / "cpu.stat").read_text().splitlines():
        if line.startswith("usage_usec "):
            return int(line.split()[1])
    return 0


def run_once(
    argv: Sequence[str], env: dict[str, str] | None, memcg: MemoryCgroup, bed: Testbed
) -> Sample:
    """One run of ``argv`` as a new process: spawn to the whole tree reaped.

    GNU time starts the tool and reports its peak RSS: a process forked from this one
    (28 MiB of Python) would carry this process's RSS into its own ``ru_maxrss``.
    """
    group = memcg.prepare()

    def join() -> None:  # in the child, before exec: its whole tree is charged there
        if group is not None:
            (group / "cgroup.procs").write_text(str(os.getpid()))

    with tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile("r") as rss:
        hosts0 = usage_usec(bed.cgroup)
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [TIME, "-f", "%M", "-o", rss.name, "--", *argv],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            preexec_fn=join,
        )
        try:
            _, status, ru = os.wait4(proc.pid, 0)
        except BaseException:  # Ctrl-C, SIGTERM: end the tool's whole tree, by its pids
            memcg.kill(proc.pid)
            raise
        wall = time.perf_counter() - t0
        hosts_cpu = (usage_usec(bed.cgroup) - hosts0) / 1e6
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"{list(argv)[:3]}… exited {proc.returncode}: {err.read()[-800:]!r}")
        max_rss = int(rss.read().split()[-1]) * 1024
    return Sample(wall, ru.ru_utime + ru.ru_stime, max_rss, memcg.peak(), hosts_cpu)


def tools(
    bed: Testbed,
    ssh: SshHosts,
    venv: Path,
    tmp: Path,
    base_env: dict[str, str],
    kernel_env: dict[str, str],
    sizes: Sequence[int],
) -> list[Tool]:
    hosts = bed.hosts
    ips = [h.ip for h in hosts]
    for n in sizes:
        if n <= len(hosts):
            (tmp / f"hosts-{n}").write_text("".join(f"{ip}\n" for ip in ips[:n]))
            (tmp / f"ansible-{n}.ini").write_text(
                "[bench]\n" + "".join(f"{ip}\n" for ip in ips[:n])
            )
            (tmp / f"pyinfra-{n}.py").write_text(f"hosts = {ips[:n]!r}\n")
    (tmp / "parallel_ssh_run.py").write_text(PARALLEL_SSH_SCRIPT)
    vbin = venv / "bin"
    cfg = str(ssh.config)
    ansible_env = {
        **base_env,
        "ANSIBLE_CONFIG": str(tmp / "ansible.cfg"),
        "ANSIBLE_HOME": str(tmp / "ansible-home"),
    }
    # Ansible at its fastest for a command over ssh: pipelining (one ssh connection per host
    # and module), forks = hosts, no fact gathering (ad-hoc never does), no multiplexing
    # (like every tool here, each run connects anew), the interpreter named (no discovery).
    (tmp / "ansible.cfg").write_text(
        "[defaults]\nhost_key_checking = True\nforks = 200\nlocal_tmp = "
        f"{tmp / 'ansible-local'}\nremote_tmp = {tmp / 'ansible-remote'}\n"
        "interpreter_python = /usr/bin/python3\nretry_files_enabled = False\n"
        "[ssh_connection]\npipelining = True\n"
        f"ssh_args = -F {cfg}\nssh_common_args =\n"
    )
    pyinfra_data = [
        *("--user", "root", "--port", str(SSH_PORT), "--key", str(ssh.key)),
        *("--data", f"ssh_known_hosts_file={ssh.known_hosts}"),
        *("--data", "ssh_strict_host_key_checking=yes"),
    ]
    ns = [f"/run/netns/{h.record.netns}" for h in hosts]

    def fan_out(cmd: str, items: list[str]) -> list[str]:
        return ["sh", "-c", FAN_OUT.format(cmd=cmd), "fan-out", *items]

    found = [
        Tool(
            "kernel exec",
            lambda n: [str(KERNEL), "exec", "-t", f"first{n}", "--", "uptime"],
            kernel_env,
        ),
        Tool(
            "floor (nsenter, in parallel)", lambda n: fan_out('nsenter --net="$x" uptime', ns[:n])
        ),
        Tool(
            "OpenSSH (ssh loop, in parallel)",
            lambda n: fan_out(f'ssh -F {cfg} "$x" uptime', ips[:n]),
        ),
        Tool(
            "parallel-ssh (Debian's command)",
            lambda n: [
                *("parallel-ssh", "-i", "-h", str(tmp / f"hosts-{n}"), "-p", str(n)),
                *("-t", "300", "-x", f"-F {cfg}", "uptime"),
            ],
        ),
        Tool(
            "parallel-ssh (PyPI library)",
            lambda n: [
                str(vbin / "python"),
                str(tmp / "parallel_ssh_run.py"),
                str(tmp / f"hosts-{n}"),
                str(ssh.key),
                str(SSH_PORT),
            ],
        ),
        Tool(
            "pyinfra exec",
            lambda n: [
                str(vbin / "pyinfra"),
                *("-y", "--parallel", str(n), *pyinfra_data),
                str(tmp / f"pyinfra-{n}.py"),
                *("exec", "--", "uptime"),
            ],
        ),
        Tool(
            "Ansible ad-hoc raw",
            lambda n: [
                *(str(vbin / "ansible"), "all", "-i", str(tmp / f"ansible-{n}.ini")),
                *("-f", str(n), "-m", "raw", "-a", "uptime"),
            ],
            ansible_env,
        ),
        Tool(
            "Ansible ad-hoc command",
            lambda n: [
                *(str(vbin / "ansible"), "all", "-i", str(tmp / f"ansible-{n}.ini")),
                *("-f", str(n), "-m", "command", "-a", "uptime"),
            ],
            ansible_env,
        ),
    ]
    for t in found:
        t.env = t.env or base_env
    return found


def measure(
    tool_list: list[Tool],
    n: int,
    runs: dict[int, int],
    memcg: MemoryCgroup,
    bed: Testbed,
    server: Server,
) -> dict[str, list[float]]:
    """Warm up each tool once, then alternate their runs. Returns Kernel's server side."""
    counts = {}
    baseline = len(cgroup_procs(bed.cgroup))  # agents and sshds, nothing running
    for t in tool_list:
        settle(bed, baseline)
        warm = run_once(t.argv(n), t.env, memcg, bed)
        counts[t.name] = SLOW_RUNS if warm.wall > SLOW else runs[n]
        print(f"  {t.name}: warm-up {warm.wall:.3f} s", file=sys.stderr)
    before = last_job_id(server)
    for r in range(max(counts.values())):
        for t in tool_list:
            if r >= counts[t.name]:
                continue
            settle(bed, baseline)
            s0 = cpu_ticks(server.proc.pid)
            s = run_once(t.argv(n), t.env, memcg, bed)
            s.server_cpu = (cpu_ticks(server.proc.pid) - s0) / TICK
            t.samples.setdefault(n, []).append(s)
    return {"server_side": server_side(server, before)}


def proc_ticks(pid: int) -> tuple[int, int]:
    """(own utime + stime, reaped children's cutime + cstime) in clock ticks."""
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12]), int(f[13]) + int(f[14])


@dataclass
class Breakdown:
    """Where ``kernel exec``'s CPU goes on N hosts, per run (seconds)."""

    n: int
    runs: int
    wall: float
    cli: float
    server: float
    agent: float  # the agents' own CPU, all hosts together
    keeper: float  # the keepers' own
    command: float  # what the keepers reaped: bash -c uptime
    floor_per_host: float  # the floor's CPU per host (nsenter + uptime)


def kernel_breakdown(
    kernel: Tool, floor: Tool, n: int, runs: int, memcg: MemoryCgroup, bed: Testbed, server: Server
) -> Breakdown:
    """Run ``kernel exec`` on N hosts ``runs`` times, reading every process's CPU around the
    runs: the server by thread, each host's agent and keeper (and what the keeper reaped)."""
    hosts = bed.hosts[:n]
    agents = [h.record.pid or 0 for h in hosts]
    keepers = []
    for pid in agents:
        kids = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        if len(kids) != 1:
            raise RuntimeError(f"agent {pid} has {len(kids)} children, expected its keeper")
        keepers.append(kids[0])
    baseline = len(cgroup_procs(bed.cgroup))

    def snap() -> tuple[int, int, int, int]:
        a = sum(proc_ticks(p)[0] for p in agents)
        k = [proc_ticks(p) for p in keepers]
        return cpu_ticks(server.proc.pid), a, sum(x[0] for x in k), sum(x[1] for x in k)

    samples = []
    s0 = snap()
    for _ in range(runs):
        settle(bed, baseline)
        samples.append(run_once(kernel.argv(n), kernel.env, memcg, bed))
    s1 = snap()
    floor_cpu = med([s.cpu for s in floor.samples[n]]) / n
    per = runs * TICK
    return Breakdown(
        n,
        runs,
        med([s.wall for s in samples]),
        med([s.cpu for s in samples]),
        (s1[0] - s0[0]) / per,
        (s1[1] - s0[1]) / per,
        (s1[2] - s0[2]) / per,
        (s1[3] - s0[3]) / per,
        floor_cpu,
    )


def med(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def secs(x: float) -> str:
    return f"{x * 1000:.0f} ms" if x < 1 else f"{x:.2f} s"


def mib(x: float | None) -> str:
    return "-" if x is None else f"{x / 2**20:.0f} MiB"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer runs (not for the record)")
    parser.add_argument("--hosts", default=",".join(map(str, SIZES)), help="e.g. 1,10")
    parser.add_argument(
        "--no-write", action="store_true", help="print the section, leave docs/ alone"
    )
    parser.add_argument(
        "--only",
        default="",
        help="only these peers besides Kernel and the floor (comma-separated name starts, "
        "e.g. openssh,ansible; implies --no-write)",
    )
    args = parser.parse_args()
    sizes = sorted({int(x) for x in args.hosts.split(",")})
    reason = unsupported_reason("light")
    if reason:
        print(f"bench_peers: cannot make test hosts here: {reason}", file=sys.stderr)
        return 1
    started = time.monotonic()
    debian = _peers.ensure_debian()
    venv = _peers.ensure_venv()
    runs = {n: 3 for n in sizes} if args.quick else {n: RUNS.get(n, 5) for n in sizes}
    load0 = os.getloadavg()
    calib0 = med(wall_times([sys.executable, "-c", "pass"], 15))
    memcg = MemoryCgroup()
    compile_cli()
    # A user's environment: Python tools may use and write their bytecode caches (some
    # machines set PYTHONDONTWRITEBYTECODE); no Kernel profile or settings of this shell.
    base_env = {
        k: v
        for k, v in os.environ.items()
        if k != "PYTHONDONTWRITEBYTECODE" and not k.startswith(("KERNEL_", "ANSIBLE_"))
    }
    extra: dict[int, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="kernel-bench-peers-") as tmp_name:
        tmp = Path(tmp_name)
        bed = Testbed(max(sizes), "light").up()
        ssh = SshHosts(bed.hosts, tmp)
        server: Server | None = None
        try:
            ssh.start()
            server = Server(tmp / "data")
            for i, h in enumerate(bed.hosts):
                tags = [f"first{n}" for n in sizes if i < n]
                r = server.api.post(
                    "/api/v1/servers",
                    json={
                        "name": h.name,
                        "agent_url": h.agent_url,
                        "agent_key": h.key,
                        "tags": tags,
                    },
                )
                r.raise_for_status()
            kernel_env = {**base_env, "KERNEL_URL": server.url, "KERNEL_TOKEN": server.token}
            tool_list = tools(bed, ssh, venv, tmp, base_env, kernel_env, sizes)
            if args.only:
                wanted = tuple(w.strip().lower() for w in args.only.split(",") if w.strip())
                tool_list = tool_list[:2] + [
                    t for t in tool_list[2:] if t.name.lower().startswith(wanted)
                ]
            for n in sizes:
                print(f"bench_peers: {n} hosts", file=sys.stderr)
                extra[n] = measure(tool_list, n, runs, memcg, bed, server)
            big = sizes[-1]
            print(f"bench_peers: where kernel exec's CPU goes on {big} hosts", file=sys.stderr)
            breakdown = kernel_breakdown(
                tool_list[0], tool_list[1], big, 3 if args.quick else 7, memcg, bed, server
            )
            server_rss = _vm_hwm(server.proc.pid)
        finally:
            if server is not None:
                server.stop()
            ssh.stop()
            bed.down()
            memcg.close()
    load1 = os.getloadavg()
    calib1 = med(wall_times([sys.executable, "-c", "pass"], 15))
    body = report(
        tool_list,
        sizes,
        extra,
        breakdown,
        debian,
        server_rss,
        (load0, load1),
        (calib0, calib1),
        time.monotonic() - started,
    )
    if args.no_write or args.quick or args.only:
        print(body)
    else:
        write_section("peers", "Kernel beside its peers: `uptime` on 1 to 100 hosts", body)
    return 0


def _vm_hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def report(
    tool_list: list[Tool],
    sizes: list[int],
    extra: dict[int, dict[str, list[float]]],
    bd: Breakdown,
    versions: dict[str, str],
    server_rss: int,
    loads: tuple[tuple[float, float, float], tuple[float, float, float]],
    calib: tuple[float, float],
    took: float,
) -> str:
    kernel, floor = tool_list[0], tool_list[1]
    peers = tool_list[2:]
    wall = {t.name: {n: med([s.wall for s in t.samples[n]]) for n in sizes} for t in tool_list}
    k = wall[kernel.name]

    def cell(t: Tool, n: int) -> str:
        w = wall[t.name][n]
        ratio = (
            "" if t is kernel else f" ({w / k[n]:.1f}x)" if w >= k[n] else f" (1/{k[n] / w:.1f})"
        )
        return f"{secs(w)}{ratio}"

    rows = [
        [t.name, *(cell(t, n) for n in sizes), str(len(t.samples[sizes[-1]]))] for t in tool_list
    ]
    wall_table = table(
        ["tool", *(f"{n} host{'s' if n > 1 else ''}" for n in sizes), f"runs at {sizes[-1]}"], rows
    )

    big = sizes[-1]
    use_rows = []
    for t in tool_list:
        row = [t.name]
        for n in dict.fromkeys((sizes[0], big)):
            ss = t.samples[n]
            cpu = med([x.cpu for x in ss])
            if t is kernel:
                srv = statistics.fmean([x.server_cpu for x in ss])  # in clock ticks: a mean
                cpu_s = f"{secs(cpu)} + server {secs(srv)}"
            else:
                cpu_s = secs(cpu)
            peak = [x.mem_peak for x in ss if x.mem_peak is not None]
            row += [cpu_s, mib(max(x.max_rss for x in ss)), mib(max(peak) if peak else None)]
            hosts = med([x.hosts_cpu for x in ss]) / n * 1000
            row.append("- (in its CPU)" if t is floor else f"{hosts:.1f} ms")
        use_rows.append(row)
    heads = ["tool"]
    for n in dict.fromkeys((sizes[0], big)):
        heads += [f"CPU, {n}", f"largest RSS, {n}", f"tree peak, {n}", f"hosts' CPU per host, {n}"]
    use_table = table(heads, use_rows)

    checks = []
    if 1 in sizes:
        checks.append(["1 host", f"≤ {secs(TARGET_1)}", secs(k[1]), _met(k[1] <= TARGET_1)])
    if big >= 100:
        checks.append(
            [f"{big} hosts", f"≤ {secs(TARGET_100)}", secs(k[big]), _met(k[big] <= TARGET_100)]
        )
        if peers:
            fastest = min(peers, key=lambda t: wall[t.name][big])
            f_peer = wall[fastest.name][big]
            checks.append(
                [
                    f"{big} hosts, vs the fastest peer ({fastest.name})",
                    f"≥ {PEER_FACTOR:g}x faster",
                    f"{f_peer / k[big]:.1f}x faster",
                    _met(f_peer / k[big] >= PEER_FACTOR),
                ]
            )
        f_floor = wall[floor.name][big]
        checks.append(
            [
                f"{big} hosts, vs the floor",
                f"≤ {FLOOR_FACTOR:g}x the floor",
                f"{k[big] / f_floor:.1f}x the floor",
                _met(k[big] / f_floor <= FLOOR_FACTOR),
            ]
        )
    target_table = table(["`kernel exec -- uptime`", "target", "measured", "met"], checks)

    parts = []
    for n in sizes:
        ss = kernel.samples[n]
        side = extra[n]["server_side"]
        cli = med([x.cpu for x in ss])
        srv = statistics.fmean([x.server_cpu for x in ss])  # in clock ticks: a mean
        parts.append(
            [
                n,
                secs(k[n]),
                secs(med(side)) if side else "-",
                secs(k[n] - med(side)) if side else "-",
                secs(cli),
                f"{secs(srv)} ({srv / n * 1000:.1f} ms/host)",
                f"{med([x.hosts_cpu for x in ss]) / n * 1000:.1f} ms",
            ]
        )
    part_table = table(
        [
            "hosts",
            "wall",
            "server side (created → finished)",
            "rest (CLI start, request, stream)",
            "CLI CPU",
            "server CPU per run",
            "hosts' CPU per host (agent + keeper + uptime)",
        ],
        parts,
    )

    def cpu_row(what: str, x: float) -> list[str]:
        return [what, f"{x * 1000:.0f} ms", f"{x / bd.n * 1000:.2f} ms"]

    host_side = bd.agent + bd.keeper + bd.command
    total = bd.cli + bd.server + host_side
    bd_rows = [
        cpu_row("the CLI (`kernel` process tree)", bd.cli),
        cpu_row("kernel-server, all threads", bd.server),
        cpu_row("agents (their own CPU)", bd.agent),
        cpu_row("keepers (their own CPU)", bd.keeper),
        cpu_row("the command (`bash -c uptime`, reaped by the keeper)", bd.command),
        cpu_row("total", total),
        cpu_row("the floor: `nsenter` + `uptime`, for comparison", bd.floor_per_host * bd.n),
    ]
    bd_table = table(["where", "CPU per run", "per host"], bd_rows)
    (l0, l1) = loads
    pins = ", ".join(f"{p} {v}" for p, v in versions.items())
    return f"""\
`uptime` on the first 1, {", ".join(map(str, sizes[1:]))} light test hosts, each tool a new
process per run, from spawn to exit (median wall time; in brackets the tool's time ÷
`kernel exec`'s, so 7.0x means Kernel is 7 times faster, 1/2.0 means the tool takes half as
long). Every host runs its Kernel agent and an sshd, both in its network namespace and
cgroup; everything — the hosts, the Kernel server, the tools — shares this machine's 2 CPUs.
Load average (1/5/15 min) {l0[0]:.2f} / {l0[1]:.2f} / {l0[2]:.2f} at the start,
{l1[0]:.2f} / {l1[1]:.2f} / {l1[2]:.2f} at the end; calibration: `python -c pass` took
{calib[0] * 1000:.1f} ms before the runs and {calib[1] * 1000:.1f} ms after (median of 15; about
7.5 ms on an idle machine of this kind: a larger figure is about how much a busy machine
stretched the wall times — less so the CPU figures — while other work ran beside the bench).

{wall_table}

{target_table}

Controller CPU (user + sys of the tool's whole process tree, median per run), peak memory
(the largest process's peak RSS, and the whole tree's peak in a memory cgroup: what it
charged — anonymous and kernel memory and new page cache, not libraries already cached), and
the test hosts' CPU per host per run (their cgroups: sshd or agent, and `uptime`). For
Kernel the CPU is the CLI's plus the server's during the run; `kernel-server`'s own peak
RSS over the whole bench was {mib(server_rss)}.

{use_table}

Where `kernel exec`'s time goes (medians per run; the server side from the job's own
timestamps):

{part_table}

Where the CPU of `kernel exec` on {bd.n} hosts goes ({bd.runs} more runs, wall median
{secs(bd.wall)}; every process's CPU read from `/proc` around them): the whole job costs
{secs(total)} of CPU, and on 2 CPUs no run can take less than half of that
({secs(total / 2)}).

{bd_table}

**Method.** `bench/bench_peers.py` (run as root: `.venv/bin/python bench/bench_peers.py`,
or `scripts/bench` with every other bench; this one took {took / 60:.0f} min here, most of
it Ansible at 100 hosts; `--hosts 1,10 --quick` for a try). It installs the tools itself at
pinned versions — Debian: {pins}; PyPI, in a virtualenv of its own under
`~/.cache/kernel-bench/`: {", ".join(_peers.PYPI_PINS)} — then makes {big} light test hosts
(`kernel.testbed`), starts one sshd per host on `<host>:{SSH_PORT}` (its own config, pid
file, an ed25519 host key and client key made in a temporary directory), a `kernel-server`
(SQLite, no status poller) on loopback with the hosts enrolled by URL + key and tagged
`firstN`, and runs, for each size, one warm-up and then the runs of every tool in turn (a
tool whose warm-up took over {SLOW:g} s gets {SLOW_RUNS} runs, the others
{", ".join(f"{RUNS[n]} at {n}" for n in SIZES)}). The tools, all told to use every host at
once: `kernel exec -t firstN -- uptime` (KERNEL_URL/KERNEL_TOKEN in the environment); the
floor, a shell starting `nsenter --net=<host's netns> uptime` for every host at once; plain
`ssh` started for every host at once by a shell; `parallel-ssh -i -p N`; the parallel-ssh
library's `ParallelSSHClient.run_command` (libssh2, the script is in the bench);
`pyinfra --parallel N … exec -- uptime`; `ansible all -f N -m raw|command -a uptime`. Every
OpenSSH-based tool uses the same ssh_config: curve25519-sha256, ed25519 host keys checked
against a known_hosts of the hosts, no connection sharing (each run connects anew, as a
script started by cron or CI does; Kernel's server keeps its connections to agents open
between jobs — that is its design, not a tuning). Ansible gets its fastest settings for the
job: pipelining, forks = N, the interpreter named (no discovery). pyinfra (paramiko) and the
parallel-ssh library check host keys by their own means: pyinfra against the same
known_hosts, the library not at all. Each tool runs under GNU time (for its peak RSS; about a
millisecond of the wall time, the same for every tool), in a memory cgroup of its own (for
the tree's peak), its output to /dev/null; a run that fails stops the bench. Network traffic
goes only to loopback and the test hosts' addresses; every sshd, the server and the hosts
are stopped by their pids and records at the end.
"""


def _met(ok: bool) -> str:
    return "yes" if ok else "NO"


if __name__ == "__main__":
    sys.exit(main())

"""``kernel-testbed up N [--full] [--no-agent]`` · ``list [--json]`` · ``down [--all] [PREFIX…]``
· ``run HOST CMD…``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from kernel.exceptions import TestbedError
from kernel.testbed import names, teardown
from kernel.testbed.bed import Testbed, install_signal_handlers
from kernel.testbed.state import BedRecord, all_beds, registry_lock


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kernel-testbed",
        description="Test hosts in network namespaces, each running a Kernel agent.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up = sub.add_parser("up", help="start N hosts; returns once their agents answer")
    up.add_argument("n", type=_count, metavar="N", help="number of hosts")
    up.add_argument("--full", action="store_true", help="systemd hosts (default: light)")
    up.add_argument("--json", action="store_true", help="print the hosts as JSON")
    up.add_argument(
        "--no-agent", action="store_true", help="no agent (e.g. to try enrollment by hand)"
    )
    ls = sub.add_parser("list", help="list running test hosts")
    ls.add_argument("--json", action="store_true", help="JSON: name, address, mode, URL, key")
    down = sub.add_parser("down", help="remove beds made by `up` (or the ones named)")
    down.add_argument("prefixes", nargs="*", metavar="PREFIX", help="beds to remove (ktXXXX)")
    down.add_argument(
        "--all",
        action="store_true",
        help="also leftovers of crashed runs: every kt* object no live process owns",
    )
    run = sub.add_parser("run", help="run a command inside a host (nsenter, not the agent)")
    run.add_argument("host", metavar="HOST", help="a host name from `list`")
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="CMD", help="command and args")
    return p


def _count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 1 <= n <= 4000:
        raise argparse.ArgumentTypeError("N must be between 1 and 4000")
    return n


def _host_rows(beds: Sequence[BedRecord]) -> list[dict[str, object]]:
    return [
        {
            "bed": b.prefix,
            "name": h.name,
            "address": h.ip,
            "mode": h.mode,
            "agent_url": h.agent_url,
            "key": h.key,
            "gateway": b.gateway_ip,
            "state": "stopped" if h.stopped else _bed_state(b),
        }
        for b in beds
        for h in b.hosts
    ]


def _bed_state(bed: BedRecord) -> str:
    if bed.detached:
        return "up"
    return f"test (pid {bed.owner_pid})" if bed.owner_alive() else "leftover"


def _print_hosts(beds: Sequence[BedRecord], as_json: bool) -> None:
    rows = _host_rows(beds)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        print("no test hosts")
        return
    print(f"{'NAME':<13} {'ADDRESS':<15} {'MODE':<5} {'AGENT URL':<26} STATE")
    for r in rows:
        print(
            f"{r['name']:<13} {r['address']:<15} {r['mode']:<5} {r['agent_url']:<26} {r['state']}"
        )
    gateways = sorted({f"{b.prefix}: {b.gateway_ip}" for b in beds})
    print("gateway (server side): " + ", ".join(gateways) + "; keys: `list --json`")


def _up(args: argparse.Namespace) -> int:
    mode = "full" if args.full else "light"
    bed = Testbed(args.n, mode, detached=True, agent=not args.no_agent)
    bed.up()
    assert bed.record is not None
    _print_hosts([bed.record], args.json)
    return 0


def _down(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        raise TestbedError("removing test hosts needs root")
    with registry_lock():
        beds = {b.prefix: b for b in all_beds()}
    if args.prefixes:
        targets = []
        for prefix in args.prefixes:
            if not names.PREFIX_RE.match(prefix) or prefix not in beds:
                raise TestbedError(f"no testbed named {prefix!r} (see `kernel-testbed list`)")
            if not teardown.removable(beds[prefix], include_owned=True):
                raise TestbedError(f"{prefix} belongs to running process {beds[prefix].owner_pid}")
            targets.append(beds[prefix])
    else:
        targets = [b for b in beds.values() if teardown.removable(b, include_owned=args.all)]
    for bed in targets:
        teardown.destroy(bed)
        print(f"removed {bed.prefix} ({len(bed.hosts)} hosts)")
    if args.all:
        for what in teardown.sweep():
            print(f"removed leftover {what}")
    if not targets and not args.all:
        print("nothing to remove")
    return 0


def _run(args: argparse.Namespace) -> int:
    prefix = names.prefix_of(args.host)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not prefix or not cmd:
        raise TestbedError("usage: kernel-testbed run HOST CMD… (HOST as shown by `list`)")
    if os.geteuid() != 0:
        raise TestbedError("entering a test host needs root")
    try:
        bed = Testbed.attach(prefix)
    except TestbedError:
        raise TestbedError(
            f"no test host named {args.host!r} (see `kernel-testbed list`)"
        ) from None
    host = next((h for h in bed.hosts if h.name == args.host), None)
    if host is None:
        raise TestbedError(f"no test host named {args.host!r} (see `kernel-testbed list`)")
    proc = host.run(cmd, timeout=3600)
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    return proc.returncode


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    install_signal_handlers()
    try:
        if args.command == "up":
            return _up(args)
        if args.command == "run":
            return _run(args)
        if args.command == "list":
            _print_hosts(all_beds(), args.json)
            return 0
        return _down(args)
    except TestbedError as e:
        print(f"kernel-testbed: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("kernel-testbed: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""Record a status-probe case for tests/data/probe/ (pyinfra style: command, output, expected).

    python tests/services/record_probe.py NAME --units sums,cron           # run here, for real
    python tests/services/record_probe.py NAME --unshare --units sums      # in new UTS+mount ns
    python tests/services/record_probe.py NAME --full --units sums,cron    # a full test host
    python tests/services/record_probe.py NAME --units sums --output FILE  # hand-edited output
    python tests/services/record_probe.py --refresh       # recompute every case's `expected`
    python tests/services/record_probe.py --restamp       # new script: stamp hand-edited cases

`expected` is what the parser says today: read it before committing, it is the test's truth.
After a change to the script, re-record the real runs (descriptions starting "Real run") and
`--restamp` the hand-edited ones: they keep their output (the format is the same) and get
today's `command`. `--restamp` leaves real runs alone and lists (exit 1) those whose command
is stale, so none is forgotten.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

from kernel.server.status.probe import parse_probe, probe_script

DATA = Path(__file__).resolve().parents[1] / "data" / "probe"


def expected_of(output: str | bytes) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(parse_probe(output))))


def run_full(cmd: str, setup: str | None) -> str:
    from kernel.testbed import Testbed

    with Testbed(1, "full") as bed:
        host = bed.hosts[0]
        if setup:
            host.run(setup, check=True)
        return host.client(timeout=60).exec(cmd, timeout=60).stdout


def refresh() -> int:
    """After a deliberate parser change: recompute `expected` from each stored output."""
    for path in sorted(DATA.glob("*.json")):
        case = json.loads(path.read_text())
        output = (
            base64.b64decode(case["output_base64"]) if "output_base64" in case else case["output"]
        )
        case["expected"] = expected_of(output)
        path.write_text(json.dumps(case, indent=2, ensure_ascii=False) + "\n")
        print(f"refreshed {path.name}")
    return 0


def restamp() -> int:
    """After a change to the script: give hand-edited cases today's command (their output
    stays as edited); real runs must be recorded again, so they are only listed."""
    stale = []
    for path in sorted(DATA.glob("*.json")):
        case = json.loads(path.read_text())
        cmd = probe_script(case["units"]).cmd
        if case["command"] == cmd:
            continue
        if case.get("description", "").startswith("Real run"):
            stale.append(path.name)
            continue
        case["command"] = cmd
        path.write_text(json.dumps(case, indent=2, ensure_ascii=False) + "\n")
        print(f"restamped {path.name}")
    for name in stale:
        print(f"record again (real run, script changed): {name}", file=sys.stderr)
    return 1 if stale else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("name", nargs="?")
    p.add_argument("--refresh", action="store_true", help="recompute expected of every case")
    p.add_argument("--restamp", action="store_true", help="today's command in hand-edited cases")
    p.add_argument("--units", default="", help="comma-separated units to ask for")
    p.add_argument("--description", default="")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--unshare", action="store_true", help="run in new UTS+mount namespaces")
    where.add_argument("--full", action="store_true", help="run on a full test host (systemd)")
    where.add_argument("--output", type=Path, help="take the output from this file")
    p.add_argument("--setup", help="shell run first (inside the namespace / test host)")
    a = p.parse_args()
    if a.refresh:
        return refresh()
    if a.restamp:
        return restamp()
    if not a.name:
        p.error("a case name is needed")

    units = [u for u in a.units.split(",") if u]
    cmd = probe_script(units).cmd
    output: str | bytes
    if a.output:
        output = a.output.read_bytes()
    elif a.full:
        output = run_full(cmd, a.setup)
    else:
        script = (a.setup + "\n" if a.setup else "") + cmd
        argv = ["bash", "-c", script]
        if a.unshare:
            argv = ["unshare", "--uts", "--mount", "--propagation", "private", *argv]
        output = subprocess.run(argv, capture_output=True, check=False).stdout

    case: dict = {"description": a.description, "units": units, "command": cmd}
    if isinstance(output, bytes):
        try:
            output = output.decode("utf-8")
        except UnicodeDecodeError:
            case["output_base64"] = base64.b64encode(output).decode()
    if isinstance(output, str):
        case["output"] = output
    case["expected"] = expected_of(output)
    path = DATA / f"{a.name}.json"
    path.write_text(json.dumps(case, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Assertions shared by the testbed tests."""

import json
import subprocess
import time
from pathlib import Path

from kernel.testbed.state import RUN_DIR
from kernel.testbed.system import cgroup_dir, healthz


def answers(host, timeout=0.5):
    return healthz(host.ip, 8001, timeout=timeout)


def eventually(probe, timeout=15.0, step=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():
            return True
        time.sleep(step)
    return probe()


def leftovers(prefix):
    """Everything of bed ``prefix`` still present on this machine (empty when torn down)."""
    found = []
    ns = subprocess.run(["ip", "-j", "netns", "list"], capture_output=True, text=True).stdout
    found += [n["name"] for n in json.loads(ns or "[]") if n["name"].startswith(prefix)]
    links = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True).stdout
    found += [n["ifname"] for n in json.loads(links) if n["ifname"].startswith(prefix)]
    found += [m for m in Path("/proc/self/mounts").read_text().splitlines() if prefix in m]
    if cgroup_dir(prefix).exists():
        found.append(str(cgroup_dir(prefix)))
    if (RUN_DIR / prefix).exists():
        found.append(str(RUN_DIR / prefix))
    return found


def alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"

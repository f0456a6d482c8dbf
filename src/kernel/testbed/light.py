"""Light hosts: a network namespace and one agent process in it, nothing more."""

from __future__ import annotations

import subprocess
from pathlib import Path

from kernel.testbed.system import agent_python, join_cgroup_argv


def write_key(host_dir: Path, key: str) -> Path:
    host_dir.mkdir(parents=True, exist_ok=True)
    key_file = host_dir / "agent.key"
    key_file.touch(mode=0o600)
    key_file.write_text(key + "\n")
    return key_file


def spawn_agent(
    agent_file: Path, netns: str, host_dir: Path, listen: str, allow: str, cgroup: Path
) -> subprocess.Popen[bytes]:
    """Start the agent inside ``netns`` and ``cgroup``; it outlives this process if detached."""
    cgroup.mkdir(parents=True, exist_ok=True)
    state_dir = host_dir / "state"
    state_dir.mkdir(parents=True, exist_ok=True)
    config = host_dir / "agent.conf"  # empty: never this machine's /etc/kernel-agent
    config.touch()
    argv = ["nsenter", f"--net=/run/netns/{netns}", agent_python(), str(agent_file)]
    argv += ["--config", str(config), "--listen", listen, "--key-file", str(host_dir / "agent.key")]
    argv += ["--state-dir", str(state_dir), "--allow-ips", allow]
    with open(host_dir / "agent.log", "ab") as log:
        return subprocess.Popen(
            join_cgroup_argv(cgroup, argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=host_dir,
        )

"""An installed wheel carries everything a server needs at run time: the agent file and the
install scripts it serves, the migrations, and the examples a new data dir is filled with."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow]


def test_the_wheel_carries_the_package_data(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(REPO)],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("kernel_cluster-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "kernel/agent.py",
        "kernel/deploy/install.sh",
        "kernel/deploy/uninstall.sh",
        "kernel/deploy/kernel-agent.service",
        "kernel/server/models/migrations/env.py",
        "kernel/server/models/migrations/script.py.mako",
        "kernel/server/models/migrations/versions/0001_initial.py",
        "kernel/server/examples/service/sums/info.json",
        "kernel/server/examples/service/sums/sums.tgz",
        "kernel/server/examples/service/hello-web/deploy.sh",
        "kernel/server/examples/init/10-motd.sh",
    ):
        assert needed in names, needed

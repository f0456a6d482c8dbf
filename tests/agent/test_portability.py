"""The agent is one stdlib-only file that runs on Python 3.8."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support.agents import AGENT_PY, Agent

PY38 = Path("/root/.pyenv/versions/3.8.18/bin/python3.8")


def test_syntax_is_python_3_8() -> None:
    ast.parse(AGENT_PY.read_text(), feature_version=(3, 8))


def test_vermin_says_3_8() -> None:
    vermin = shutil.which("vermin") or str(Path(sys.executable).parent / "vermin")
    r = subprocess.run(
        [vermin, "-t=3.8-", "--violations", "--no-tips", "-q", str(AGENT_PY)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr


def test_imports_only_the_standard_library() -> None:
    tree = ast.parse(AGENT_PY.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no relative imports"
            names.add((node.module or "").split(".")[0])
    # _sha2 is the 3.12+ name of the interpreter's built-in SHA-256 (3.11 has _sha256)
    outside = sorted(n for n in names if n not in sys.stdlib_module_names | {"_sha2"})
    assert not outside, outside


def test_runs_alone_outside_the_package(tmp_path: Path) -> None:
    """Copied alone to a directory, with the package not importable."""
    copy = tmp_path / "agent.py"
    copy.write_bytes(AGENT_PY.read_bytes())
    r = subprocess.run(
        [sys.executable, "-I", "-S", str(copy), "--version"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert r.returncode == 0 and "kernel-agent" in r.stdout


@pytest.mark.skipif(not PY38.exists(), reason="no Python 3.8 on this machine")
def test_serves_on_python_3_8(agent_factory) -> None:
    agent: Agent = agent_factory(python=str(PY38))
    info = agent.request("GET", "/api/v2/info").json()
    assert info["python"].startswith("3.8.")
    r = agent.exec("echo $0; cat", stdin="in")
    assert (r["exit_code"], r["stdout"]) == (0, "bash\nin")
    r = agent.exec("sleep 5", timeout=0.3)
    assert r["timed_out"]
    events = agent.request(
        "POST", "/api/v2/exec", {"cmd": "echo s", "stream": True}
    ).text.splitlines()
    assert len(events) == 3

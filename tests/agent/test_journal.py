"""The run journal on disk and its clean-up, without processes."""

from __future__ import annotations

import time
from pathlib import Path

from kernel.agent import Config, RunStore, read_run_file


def test_read_run_file(tmp_path: Path) -> None:
    f = tmp_path / "x.run"
    assert read_run_file(str(f)) == (None, False, None)
    f.write_text('{"id": "x", "timeout": 5}\n')
    assert read_run_file(str(f)) == ({"id": "x", "timeout": 5}, False, None)
    f.write_text('{"id": "x"}\n{"pid": 12}\n{"status": {"exit_code": 0}}\n')
    assert read_run_file(str(f)) == ({"id": "x"}, True, {"exit_code": 0})
    f.write_text('{"id": "x"}\n{"pid": 12}\n{"status": {"exit_c')  # torn: not finished yet
    assert read_run_file(str(f)) == ({"id": "x"}, True, None)
    f.write_bytes(b"\xff\n[1]\n")
    assert read_run_file(str(f)) == (None, False, None)


def test_finished_runs_are_pruned_by_age_and_count(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    now = time.time()
    for i in range(5):
        finished = now - 7200 if i == 0 else now - 100 + i
        (runs / f"r{i}.run").write_text(
            f'{{"id": "r{i}", "started_at": {finished}}}\n'
            f'{{"status": {{"exit_code": 0, "finished_at": {finished}}}}}\n'
        )
        (runs / f"r{i}.stdout").write_text("out")
    (runs / "stray.stdout").write_text("left by a pruned run")
    (runs / "bad.run").write_text("not json")
    store = RunStore(Config(state_dir=str(tmp_path), keep_finished_count=3), "/bin/bash")
    store.load()
    assert sorted(store.runs) == ["r0", "r1", "r2", "r3", "r4"]
    assert not (runs / "stray.stdout").exists() and not (runs / "bad.run").exists()
    store.prune()
    assert sorted(store.runs) == ["r2", "r3", "r4"]
    assert sorted(p.name for p in runs.iterdir()) == [
        "r2.run", "r2.stdout", "r3.run", "r3.stdout", "r4.run", "r4.stdout",
    ]  # fmt: skip

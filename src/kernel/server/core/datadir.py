"""The data dir (ARCHITECTURE.md §4): what a new one is filled with — the example services and
init scripts that ship inside the package (kernel/server/examples)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from kernel.server.core.files import is_hidden

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"  # package data


def install_examples(
    data_dir: str | os.PathLike[str],
    examples: str | os.PathLike[str] = EXAMPLES_DIR,
    *,
    test_only: bool = False,
) -> list[str]:
    """Copy the example services and init scripts into a data dir that has none yet.

    `service/` and `init/` are each filled only when they do not exist, so an admin's own
    folders are never touched. Services marked `"test_only": true` in info.json are skipped
    unless `test_only`. Returns what was copied ("service/sums", "init/10-motd.sh", …).
    """
    src = Path(examples)
    dst = Path(data_dir)
    copied: list[str] = []
    if (src / "service").is_dir() and not (dst / "service").exists():
        (dst / "service").mkdir(parents=True)
        for folder in sorted((src / "service").iterdir()):
            if not folder.is_dir() or is_hidden(folder.name):
                continue
            if not test_only and _marked_test_only(folder):
                continue
            shutil.copytree(folder, dst / "service" / folder.name, symlinks=True)
            copied.append(f"service/{folder.name}")
    if (src / "init").is_dir() and not (dst / "init").exists():
        (dst / "init").mkdir(parents=True)
        for script in sorted((src / "init").iterdir()):
            if script.is_file() and not is_hidden(script.name):
                shutil.copy2(script, dst / "init" / script.name)
                copied.append(f"init/{script.name}")
    return copied


def _marked_test_only(folder: Path) -> bool:
    try:
        info = json.loads((folder / "info.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and info.get("test_only") is True

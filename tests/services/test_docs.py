"""Every setting and script variable the services code uses is documented."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULES = [
    "core/shell", "services/catalog", "status/probe", "services/artifacts", "services/operations",
    "inventory/initscripts",
]  # fmt: skip


def test_every_kernel_name_is_documented():
    docs = (ROOT / "docs/services.md").read_text() + (ROOT / "docs/status.md").read_text()
    used = set()
    for m in MODULES:
        used |= set(
            re.findall(r"\bKERNEL_[A-Z_]+\b", (ROOT / f"src/kernel/server/{m}.py").read_text())
        )
    assert used, "the pattern found nothing: the test is broken"
    missing = sorted(n for n in used if n not in docs)
    assert not missing, f"not in docs/services.md or docs/status.md: {missing}"

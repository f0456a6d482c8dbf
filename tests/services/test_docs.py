"""Every setting and script variable the services code uses is documented."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULES = [
    "core/shell", "services/catalog", "status/probe", "services/artifacts", "services/operations",
    "inventory/initscripts", "files/push",
]  # fmt: skip
DOCS = ("services.md", "status.md", "files.md")


def test_every_kernel_name_is_documented():
    docs = "".join((ROOT / "docs" / name).read_text() for name in DOCS)
    used = set()
    for m in MODULES:
        used |= set(
            re.findall(r"\bKERNEL_[A-Z_]+\b", (ROOT / f"src/kernel/server/{m}.py").read_text())
        )
    assert used, "the pattern found nothing: the test is broken"
    missing = sorted(n for n in used if n not in docs)
    assert not missing, f"not in docs/services.md, status.md or files.md: {missing}"

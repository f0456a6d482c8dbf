"""pytest fixtures for test hosts.

Enable with ``pytest_plugins = ["kernel.testbed.pytest_plugin"]`` in a conftest.py::

    def test_x(light_hosts):
        bed = light_hosts(3)            # a Testbed, torn down after the module
        bed.hosts[0].client().exec("true")

- ``light_hosts(n=1, **kw)``, ``full_hosts(n=1, **kw)``: module-scoped factories;
- ``testbed_factory(n=1, mode="light", **kw)``: the same, session-scoped.

Each returns a running :class:`~kernel.testbed.Testbed`; keyword arguments go to it. The test
is skipped with the reason when hosts cannot be made here (not root, a tool missing), or fails
instead when ``KERNEL_TESTBED_REQUIRED=1`` (CI). Tests using them get the ``testbed`` marker.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from kernel.testbed.bed import PACKAGE_DIR, Testbed
from kernel.testbed.system import unsupported_reason

FIXTURES = ("light_hosts", "full_hosts", "testbed_factory")
BedFactory = Callable[..., Testbed]


def _unavailable(mode: str) -> str | None:
    reason = unsupported_reason(mode)
    if reason is None and not (PACKAGE_DIR / "agent.py").is_file():
        reason = "src/kernel/agent.py is missing"
    if reason is None and mode == "full" and not (PACKAGE_DIR / "deploy/install.sh").is_file():
        reason = "src/kernel/deploy/install.sh is missing"
    return reason


def _factory(default_mode: str) -> Iterator[BedFactory]:
    beds: list[Testbed] = []

    def make(n: int = 1, mode: str = default_mode, **kwargs: Any) -> Testbed:
        reason = _unavailable(mode)
        if reason:
            if os.environ.get("KERNEL_TESTBED_REQUIRED") == "1":
                pytest.fail(f"test hosts required but unavailable: {reason}")
            pytest.skip(f"no {mode} test hosts: {reason}")
        bed = Testbed(n, mode, **kwargs)
        beds.append(bed)
        return bed.up()

    try:
        yield make
    finally:
        for bed in reversed(beds):
            bed.down()


@pytest.fixture(scope="module")
def light_hosts() -> Iterator[BedFactory]:
    yield from _factory("light")


@pytest.fixture(scope="module")
def full_hosts() -> Iterator[BedFactory]:
    yield from _factory("full")


@pytest.fixture(scope="session")
def testbed_factory() -> Iterator[BedFactory]:
    yield from _factory("light")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if any(f in getattr(item, "fixturenames", ()) for f in FIXTURES):
            item.add_marker(pytest.mark.testbed)

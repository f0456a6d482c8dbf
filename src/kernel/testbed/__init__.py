"""Test hosts in network namespaces: light (an agent process) or full (systemd as PID 1).

See docs/testbed.md. The API: ``Testbed``, ``Host``; the pytest plugin
``kernel.testbed.pytest_plugin``; the command ``kernel-testbed``.
"""

from kernel.exceptions import TestbedError
from kernel.testbed.bed import Testbed
from kernel.testbed.host import Host
from kernel.testbed.system import unsupported_reason

__all__ = ["Host", "Testbed", "TestbedError", "unsupported_reason"]

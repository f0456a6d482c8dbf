"""A real agent process on loopback, for running service commands that are safe here.

Nothing here deploys onto this machine: tests with real deploys use full test hosts.
Every process the agent starts carries a marker in its environment; teardown stops the agent
and its keeper by pid and fails the test if any marked process is left.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from kernel.agent_client import AgentClient, ExecResult
from kernel.server.core.shell import RemoteCommand
from support.agents import start_agent

KEY = "5e" * 32


def run(client: AgentClient, command: RemoteCommand) -> ExecResult:
    """Send one RemoteCommand the way the job runner does."""
    return client.exec(
        command.cmd,
        stdin=command.stdin,
        env=dict(command.env),
        cwd=command.cwd,
        timeout=command.timeout,
    )


@dataclass
class LoopbackAgent:
    client: AgentClient

    def run(self, command: RemoteCommand) -> ExecResult:
        return run(self.client, command)


@pytest.fixture(scope="module")
def loopback_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackAgent]:
    agent = start_agent(tmp_path_factory.mktemp("agent"), key=KEY)
    client = AgentClient(agent.url, KEY, timeout=30)
    try:
        yield LoopbackAgent(client)
    finally:
        client.close()
        left = agent.teardown()
        assert not left, f"processes left behind by the agent: {left}"

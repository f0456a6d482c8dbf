"""One pool of agent clients: a kept-alive `AsyncAgentClient` per agent (URL, key and TLS pin),
made on first use inside the event loop that uses it. The job runner and the status poller
each own one (aiohttp sessions belong to one loop)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from kernel.agent_client import AsyncAgentClient

AgentId = tuple[str, str, str | None]  # url, key, TLS fingerprint: a change is a new client


class AgentPool:
    def __init__(self, connect_timeout: float) -> None:
        self.connect_timeout = connect_timeout
        self._clients: dict[AgentId, AsyncAgentClient] = {}

    def get(self, url: str, key: str, fingerprint: str | None) -> AsyncAgentClient:
        agent = (url, key, fingerprint)
        client = self._clients.get(agent)
        if client is None:
            client = AsyncAgentClient(
                url, key, timeout=self.connect_timeout, tls_fingerprint=fingerprint
            )
            self._clients[agent] = client
        return client

    async def keep_only(self, agents: Iterable[AgentId]) -> None:
        """Close the clients of agents no longer in use (removed servers, changed keys)."""
        wanted = set(agents)
        for agent in [a for a in self._clients if a not in wanted]:
            with contextlib.suppress(Exception):
                await self._clients.pop(agent).aclose()

    async def close(self) -> None:
        await self.keep_only(())

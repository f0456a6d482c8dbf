"""One pool of agent clients: an `AsyncAgentClient` per agent (URL, key and TLS pin), made on
first use inside the event loop that uses it, all on one shared connection pool
(agent_client/wire.py: kept-alive connections keyed by agent address and TLS pin). The job
runner and the status poller each own one (a pool belongs to one loop).

A pool per agent (aiohttp sessions, once) cost ~60 Python objects and a timer each: at 10 000
agents, two pools held over a million objects, and every full garbage collection walked them
all (~0.3 s each on a busy 2-CPU machine; bench/bench_scale.py). Shared, an agent costs its
connection."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from kernel.agent_client import AsyncAgentClient
from kernel.agent_client.wire import Pool

AgentId = tuple[str, str, str | None]  # url, key, TLS fingerprint: a change is a new client


class AgentPool:
    def __init__(self, connect_timeout: float) -> None:
        self.connect_timeout = connect_timeout
        self._clients: dict[AgentId, AsyncAgentClient] = {}
        self._pool: Pool | None = None

    def get(self, url: str, key: str, fingerprint: str | None) -> AsyncAgentClient:
        agent = (url, key, fingerprint)
        client = self._clients.get(agent)
        if client is None:
            if self._pool is None or self._pool.closed:
                self._pool = Pool(self.connect_timeout)  # inside the loop that uses it
            client = AsyncAgentClient(
                url,
                key,
                timeout=self.connect_timeout,
                tls_fingerprint=fingerprint,
                pool=self._pool,
            )
            self._clients[agent] = client
        return client

    async def keep_only(self, agents: Iterable[AgentId]) -> None:
        """Forget the clients of agents no longer in use (removed servers, changed keys);
        their idle connections close with the pool's keep-alive timeout."""
        wanted = set(agents)
        for agent in [a for a in self._clients if a not in wanted]:
            with contextlib.suppress(Exception):
                await self._clients.pop(agent).aclose()

    async def close(self) -> None:
        await self.keep_only(())
        if self._pool is not None:
            with contextlib.suppress(Exception):
                await self._pool.close()
            self._pool = None

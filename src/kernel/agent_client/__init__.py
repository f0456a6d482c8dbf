"""Client for the agent's protocol v2 (ARCHITECTURE.md §2): signing, exec, stream, status,
cancel, info, healthz. Sync (`AgentClient`, on one kept-alive httpx client) and async
(`AsyncAgentClient`, on `wire`, a small HTTP/1.1 client on asyncio protocols with one pool of
kept-alive connections: the server's hot path, where it costs a fraction of the CPU per
request that aiohttp or httpx's async client do).

TLS pinning: with ``tls_fingerprint`` set, certificates are not checked against CAs (agents
use self-signed ones); instead the SHA-256 of the agent's certificate is compared with the pin
right after the TLS handshake and *before* the signed request is sent (httpcore's ``trace``
hook in the sync client, right after the connection is made in `wire`), the way SSH pins host
keys. `fetch_tls_fingerprint` takes the pin at enrollment.
"""

from __future__ import annotations

from kernel.agent_client.aio import AsyncAgentClient
from kernel.agent_client.results import ExecResult
from kernel.agent_client.sync import AgentClient
from kernel.agent_client.tls import fetch_tls_fingerprint, normalize_fingerprint
from kernel.exceptions import AgentError, AgentRefused, AgentUnreachable

__all__ = [
    "AgentClient",
    "AgentError",
    "AgentRefused",
    "AgentUnreachable",
    "AsyncAgentClient",
    "ExecResult",
    "fetch_tls_fingerprint",
    "normalize_fingerprint",
]

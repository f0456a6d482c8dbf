"""The asynchronous client, on aiohttp: the server's hot path (runner and poller)."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import yarl

from kernel.agent import KILL_GRACE, LINGER
from kernel.agent_client.base import KEEPALIVE, _Base
from kernel.agent_client.results import ExecResult
from kernel.exceptions import AgentUnreachable
from kernel.jsontext import loads_scrubbed

PER_AGENT = 100  # connections to one agent at most (each client had its own pool of 100)


def agent_session(
    ssl_default: ssl.SSLContext | aiohttp.Fingerprint | bool = True,
) -> aiohttp.ClientSession:
    """An aiohttp session for talking to agents: kept-alive connections, no cookies, no
    decompression. `shared_session()` is one for many agents (core/agents.py AgentPool)."""
    connector = aiohttp.TCPConnector(
        ssl=ssl_default,
        limit=0,  # the runner and the poller bound their own concurrency
        limit_per_host=PER_AGENT,
        keepalive_timeout=KEEPALIVE,
        use_dns_cache=False,
    )
    return aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,
        skip_auto_headers=("User-Agent",),
        cookie_jar=aiohttp.DummyCookieJar(),
    )


def shared_session() -> aiohttp.ClientSession:
    """One session (one connection pool, keyed by agent address and TLS pin) for the clients
    of many agents — made inside the event loop that will use it, closed by its owner.

    A session per agent costs ~60 Python objects and a cleanup timer of its own: at 10 000
    agents that is most of the server's heap, and every full garbage collection walks it
    (bench/bench_scale.py, docs/benchmarks.md). Shared, an agent costs its connection only."""
    return agent_session()


class AsyncAgentClient(_Base):
    """Asynchronous twin of `AgentClient` (``stream`` is an async iterator), on aiohttp.

    The server's runner and poller talk to thousands of agents through this class, so it is
    on the hot path: aiohttp costs ~0.15-0.5 ms of CPU per request where httpx's async client
    costs ~2.5 ms (bench/bench_agent.py; docs/design.md). Alone, a client has its own
    connection pool, opened lazily inside the running event loop; given ``session`` (a
    `shared_session()`), it uses that one and leaves closing it to its owner."""

    def __init__(
        self,
        url: str,
        key: str,
        *,
        timeout: float = 10.0,
        tls_fingerprint: str | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        super().__init__(url, key, timeout=timeout, tls_fingerprint=tls_fingerprint)
        self._shared = session
        self._session: aiohttp.ClientSession | None = None
        self._ssl: ssl.SSLContext | aiohttp.Fingerprint | bool = True
        if self.url.startswith("https:"):
            self._ssl = aiohttp.Fingerprint(bytes.fromhex(self.pin)) if self.pin else self._verify()

    def _open(self) -> aiohttp.ClientSession:
        if self._shared is not None:
            return self._shared
        if self._session is None or self._session.closed:
            self._session = agent_session(self._ssl)
        return self._session

    async def __aenter__(self) -> AsyncAgentClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close this client's own connections (a shared session is its owner's to close)."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _request(self, method: str, path: str, body: Any = None, read: float | None = None) -> Any:
        headers, content = self._signed(method, path, body)
        timeout = aiohttp.ClientTimeout(
            total=None, connect=self.timeout, sock_read=read or self.timeout
        )
        # encoded=True: the path goes out exactly as signed (no re-quoting by yarl)
        url = yarl.URL(self.url + path, encoded=True)
        # ssl per request: a shared session serves agents with different pins
        return self._open().request(
            method, url, data=content or None, headers=headers, timeout=timeout, ssl=self._ssl
        )

    def _a_unreachable(self, exc: BaseException) -> AgentUnreachable:
        if isinstance(exc, aiohttp.ServerFingerprintMismatch):
            seen = exc.got.hex() if isinstance(exc.got, bytes) else "none"
            return AgentUnreachable(
                f"{self.url}: TLS certificate fingerprint {seen} is not the pinned {self.pin}",
                error="tls_pin_mismatch",
            )
        if isinstance(exc, TimeoutError):
            return AgentUnreachable(f"{self.url}: TimeoutError: no answer in time")
        return AgentUnreachable(f"{self.url}: {type(exc).__name__}: {exc}")

    async def _call(
        self, method: str, path: str, body: Any = None, read: float | None = None
    ) -> Any:
        try:
            async with self._request(method, path, body, read) as response:
                raw = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as e:
            raise self._a_unreachable(e) from e
        return self._answer(status, raw)

    async def exec(
        self,
        cmd: str,
        *,
        stdin: str | None = None,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
        id: str | None = None,
    ) -> ExecResult:
        body = self._exec_body(cmd, stdin, env, cwd, timeout, id, False)
        data = await self._call("POST", "/api/v2/exec", body, self._run_wait(timeout))
        return ExecResult.from_json(data)

    async def stream(
        self,
        cmd: str,
        *,
        stdin: str | None = None,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
        id: str | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        body = self._exec_body(cmd, stdin, env, cwd, timeout, id, True)
        try:
            async with self._request(
                "POST", "/api/v2/exec", body, self._run_wait(timeout)
            ) as response:
                if response.status >= 400:
                    self._answer(response.status, await response.read())
                # NDJSON split here: aiohttp's own line iterator refuses lines over its
                # buffer size, and an output event may be longer than that.
                pending = b""
                async for chunk in response.content.iter_any():
                    pending += chunk
                    if b"\n" not in chunk:
                        continue
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        if line.strip():
                            yield loads_scrubbed(line)
                if pending.strip():
                    yield loads_scrubbed(pending)
        except (aiohttp.ClientError, TimeoutError) as e:
            raise self._a_unreachable(e) from e

    async def status(self, id: str, *, wait: float | None = None) -> ExecResult:
        read = None if wait is None else wait + self.timeout
        return ExecResult.from_json(
            await self._call("GET", self._status_path(id, wait), None, read)
        )

    async def cancel(self, id: str) -> ExecResult:
        read = KILL_GRACE + LINGER + 2 + self.timeout
        return ExecResult.from_json(await self._call("DELETE", self._status_path(id), None, read))

    async def info(self) -> dict[str, Any]:
        info: dict[str, Any] = await self._call("GET", "/api/v2/info")
        return info

    async def healthz(self) -> bool:
        try:
            async with self._request("GET", "/healthz") as response:
                await response.read()
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

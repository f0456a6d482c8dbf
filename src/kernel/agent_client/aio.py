"""The asynchronous client: the server's hot path (runner and poller), on `wire` (a small
HTTP/1.1 client on asyncio protocols)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from kernel.agent import KILL_GRACE, LINGER
from kernel.agent_client.base import _Base
from kernel.agent_client.http1 import PinMismatch, Target, WireError, encode_request
from kernel.agent_client.results import ExecResult
from kernel.agent_client.wire import Pool, Response
from kernel.exceptions import AgentUnreachable
from kernel.jsontext import loads_scrubbed

_FAILURES = (OSError, WireError, TimeoutError)  # what "unreachable" means (SSLError: OSError)


class AsyncAgentClient(_Base):
    """Asynchronous twin of `AgentClient` (``stream`` is an async iterator).

    The server's runner and poller talk to thousands of agents through this class, so it is
    on the hot path: `wire` costs ≈ 0.075 ms of CPU per streamed exec, aiohttp ≈ 0.18 ms,
    httpx's async client ≈ 2.5 ms (measured as docs/design.md says). Alone,
    a client has its own connection pool; given ``pool`` (a `wire.Pool` shared by many
    clients, core/agents.py), it uses that one and leaves closing it to its owner."""

    def __init__(
        self,
        url: str,
        key: str,
        *,
        timeout: float = 10.0,
        tls_fingerprint: str | None = None,
        pool: Pool | None = None,
    ) -> None:
        super().__init__(url, key, timeout=timeout, tls_fingerprint=tls_fingerprint)
        self._shared = pool
        self._own: Pool | None = None
        try:
            self._target: Target | None = Target(self.url, self.pin)
        except ValueError:  # told at the first request, as any other unreachable agent
            self._target = None

    def _pool(self) -> Pool:
        if self._shared is not None:
            return self._shared
        if self._own is None or self._own.closed:
            self._own = Pool(self.timeout)
        return self._own

    async def __aenter__(self) -> AsyncAgentClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close this client's own connections (a shared pool is its owner's to close)."""
        if self._own is not None:
            await self._own.close()
            self._own = None

    async def _request(
        self, method: str, path: str, body: Any = None, read: float | None = None
    ) -> Response:
        """Send a signed request; its response, once its head has arrived."""

        agent = self._target
        if agent is None:
            raise WireError(f"not an http(s) URL: {self.url!r}")

        def build() -> bytes:  # signed anew if sent again: a fresh nonce
            headers, content = self._signed(method, path, body)
            target = self._base_path + path  # exactly as signed
            return encode_request(method, target, agent.host_header, headers, content)

        return await self._pool().request(
            agent, build, timeout=read or self.timeout, connect_timeout=self.timeout
        )

    def _a_unreachable(self, exc: BaseException) -> AgentUnreachable:
        if isinstance(exc, PinMismatch):
            return AgentUnreachable(f"{self.url}: {exc}", error="tls_pin_mismatch")
        if isinstance(exc, TimeoutError):
            return AgentUnreachable(f"{self.url}: TimeoutError: no answer in time")
        return AgentUnreachable(f"{self.url}: {type(exc).__name__}: {exc}")

    async def _call(
        self, method: str, path: str, body: Any = None, read: float | None = None
    ) -> Any:
        try:
            async with await self._request(method, path, body, read) as response:
                raw = await response.read()
                status = response.status
        except _FAILURES as e:
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
            async with await self._request(
                "POST", "/api/v2/exec", body, self._run_wait(timeout)
            ) as response:
                if response.status >= 400:
                    self._answer(response.status, await response.read())
                # NDJSON, however long a line (an output event may be long).
                pending = b""
                async for chunk in response.chunks():
                    pending += chunk
                    if b"\n" not in chunk:
                        continue
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        if line.strip():
                            yield loads_scrubbed(line)
                if pending.strip():
                    yield loads_scrubbed(pending)
        except _FAILURES as e:
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
            async with await self._request("GET", "/healthz") as response:
                await response.read()
                return response.status == 200
        except _FAILURES:
            return False

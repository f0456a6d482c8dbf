"""The synchronous client, on one kept-alive httpx client (testbed, tools)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx

from kernel.agent import KILL_GRACE, LINGER
from kernel.agent_client.base import _Base
from kernel.agent_client.results import ExecResult
from kernel.agent_client.tls import _PinMismatch
from kernel.jsontext import loads_scrubbed


class AgentClient(_Base):
    """Synchronous client; one kept-alive connection pool. Use as a context manager."""

    def __init__(
        self, url: str, key: str, *, timeout: float = 10.0, tls_fingerprint: str | None = None
    ) -> None:
        super().__init__(url, key, timeout=timeout, tls_fingerprint=tls_fingerprint)
        self._client = httpx.Client(verify=self._verify(), timeout=timeout)
        self._ext = {"trace": self._check_pin} if self.pin else {}

    def _check_pin(self, event: str, info: dict[str, Any]) -> None:
        error = self._pin_error(event, info)
        if error is not None:
            info["return_value"].close()  # raising leaves the stream to us
            raise error

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def _call(self, method: str, path: str, body: Any = None, read: float | None = None) -> Any:
        url, headers, content, timeout = self._build(method, path, body, read)
        try:
            response = self._client.request(
                method, url, content=content, headers=headers, timeout=timeout,
                extensions=self._ext,
            )  # fmt: skip
        except (httpx.TransportError, _PinMismatch) as e:
            raise self._unreachable(e) from e
        return self._answer(response.status_code, response.content)

    def exec(
        self,
        cmd: str,
        *,
        stdin: str | None = None,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
        id: str | None = None,
    ) -> ExecResult:
        """Run ``cmd`` and wait for its result (the same ``id`` again attaches, never reruns)."""
        body = self._exec_body(cmd, stdin, env, cwd, timeout, id, False)
        return ExecResult.from_json(
            self._call("POST", "/api/v2/exec", body, self._run_wait(timeout))
        )

    def stream(
        self,
        cmd: str,
        *,
        stdin: str | None = None,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
        id: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """NDJSON events as dicts: started, stdout/stderr (``data``), exit (the result)."""
        body = self._exec_body(cmd, stdin, env, cwd, timeout, id, True)
        url, headers, content, tmo = self._build(
            "POST", "/api/v2/exec", body, self._run_wait(timeout)
        )
        try:
            with self._client.stream(
                "POST", url, content=content, headers=headers, timeout=tmo, extensions=self._ext
            ) as response:
                if response.status_code >= 400:
                    self._answer(response.status_code, response.read())
                for line in response.iter_lines():
                    if line.strip():
                        yield loads_scrubbed(line)
        except (httpx.TransportError, _PinMismatch) as e:
            raise self._unreachable(e) from e

    def status(self, id: str, *, wait: float | None = None) -> ExecResult:
        """State and output so far; ``wait`` seconds (≤ 300) for it to finish first."""
        read = None if wait is None else wait + self.timeout
        return ExecResult.from_json(self._call("GET", self._status_path(id, wait), None, read))

    def cancel(self, id: str) -> ExecResult:
        """SIGTERM to the run's process group, SIGKILL after the grace; the result after."""
        read = KILL_GRACE + LINGER + 2 + self.timeout
        return ExecResult.from_json(self._call("DELETE", self._status_path(id), None, read))

    def info(self) -> dict[str, Any]:
        info: dict[str, Any] = self._call("GET", "/api/v2/info")
        return info

    def healthz(self) -> bool:
        try:
            response = self._client.get(self.url + "/healthz", extensions=self._ext)
        except (httpx.TransportError, _PinMismatch):
            return False
        return response.status_code == 200

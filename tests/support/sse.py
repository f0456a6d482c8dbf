"""Reading server-sent events as a browser's EventSource does: frames parsed, and — with
`follow` — reconnecting with ``Last-Event-ID`` when the stream breaks, until the ``end``."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx


def parse_sse(text: str) -> list[dict[str, Any]]:
    """The events of complete frames (each its JSON data with its ``id``)."""
    out = []
    for block in text.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if ": " in line and line[0] != ":"
        )
        if "data" in fields:
            out.append({"id": fields.get("id"), **json.loads(fields["data"])})
    return out


class Follower:
    """Follows one job's events to its ``end`` (``events``, ``connects``, ``errors``)."""

    def __init__(self, client: httpx.Client, job_id: int, timeout: float = 120) -> None:
        self.client = client
        self.url = f"/api/v1/jobs/{job_id}/events"
        self.deadline = time.monotonic() + timeout
        self.events: list[dict[str, Any]] = []
        self.connects = 0
        self.errors: list[str] = []

    @property
    def ended(self) -> dict[str, Any] | None:
        return next((e for e in reversed(self.events) if e["type"] == "end"), None)

    def run(self) -> None:
        last_id: str | None = None
        while self.ended is None and time.monotonic() < self.deadline:
            headers = {"Last-Event-ID": last_id} if last_id else {}
            self.connects += 1
            try:
                with self.client.stream("GET", self.url, headers=headers, timeout=30) as resp:
                    if resp.status_code != 200:
                        self.errors.append(f"HTTP {resp.status_code}")
                        time.sleep(0.5)
                        continue
                    buf = ""
                    for chunk in resp.iter_text():
                        buf += chunk
                        while "\n\n" in buf:
                            block, buf = buf.split("\n\n", 1)
                            for ev in parse_sse(block + "\n\n"):
                                self.events.append(ev)
                                last_id = ev["id"] or last_id
                        if self.ended is not None:
                            return
            except httpx.HTTPError as e:  # the replica serving it died: reconnect, as browsers do
                self.errors.append(f"{type(e).__name__}: {e}")
                time.sleep(0.5)

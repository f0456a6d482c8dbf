"""Server-sent events framing (one place): ``id: <epoch>-<seq>``, ``event: <type>`` and one
``data:`` line of compact JSON holding ``{"type": …, …data}``."""

from __future__ import annotations

import json
from typing import Any


def frame(epoch: str, seq: int, type_: str, data: dict[str, Any]) -> str:
    body = json.dumps({"type": type_, **data}, separators=(",", ":"))
    return f"id: {epoch}-{seq}\nevent: {type_}\ndata: {body}\n\n"

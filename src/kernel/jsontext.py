"""JSON whose strings can be stored and handed on: no lone surrogates.

JSON's ``\\ud800`` escapes decode to lone surrogates, which UTF-8 cannot encode, so SQLite,
PostgreSQL, an agent's environment or a file write fail on them later, far from where they
came in. What a client sends is checked where it is read (`lone_surrogate_at` and refused);
what a host answers is scrubbed (`loads_scrubbed`: U+FFFD in their place, as the agent does
with bytes that are not UTF-8).
"""

from __future__ import annotations

import json
import re
from typing import Any

# A \uD800-\uDFFF escape somewhere: only then can a decoded string hold a lone surrogate
# (a strict UTF-8 decode never produces one). Pairs match too; the walk tells them apart.
_ESCAPE_B = re.compile(rb"\\u[dD][89a-fA-F]")
_ESCAPE_S = re.compile(r"\\u[dD][89a-fA-F]")
_LONE = re.compile("[\ud800-\udfff]")


def may_hold_surrogates(raw: bytes | str) -> bool:
    """False when decoding ``raw`` cannot give a lone surrogate (the fast, usual case)."""
    if isinstance(raw, bytes):
        return _ESCAPE_B.search(raw) is not None
    return _ESCAPE_S.search(raw) is not None or _LONE.search(raw) is not None


def _strings(value: Any, path: str = "$") -> Any:
    """(path, string) for every key and string value, depth-first, without recursion."""
    stack = [(path, value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            yield where, item
        elif isinstance(item, dict):
            for k, v in item.items():
                # the path is shown to users: a key that is itself bad is written escaped
                at = f"{where}.{k.encode('utf-8', 'backslashreplace').decode('utf-8')}"
                yield at, k
                stack.append((at, v))
        elif isinstance(item, list):
            stack.extend((f"{where}[{i}]", v) for i, v in enumerate(item))


def lone_surrogate_at(value: Any) -> str | None:
    """The JSON path of the first string holding a lone surrogate, or None."""
    for where, text in _strings(value):
        if _LONE.search(text):
            return where
    return None


def scrub(value: Any) -> Any:
    """``value`` with every lone surrogate in its strings replaced by U+FFFD."""
    if isinstance(value, str):
        return _LONE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {scrub(k): scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    return value


def loads_scrubbed(raw: bytes | str) -> Any:
    """json.loads for what a host sent: its strings are always encodable."""
    data = json.loads(raw)
    if may_hold_surrogates(raw) and lone_surrogate_at(data) is not None:
        data = scrub(data)
    return data

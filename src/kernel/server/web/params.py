"""Reading request input strictly: JSON bodies and query arguments, with clear 400s."""

from __future__ import annotations

import json
import re
from typing import Any

from flask import request

from kernel.exceptions import InvalidInput
from kernel.jsontext import lone_surrogate_at, may_hold_surrogates

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")


def parse_json(raw: bytes) -> Any:
    """A request body as JSON, or a InvalidInput saying why not. Text that UTF-8 cannot carry
    (a lone surrogate from a ``\\ud800`` escape) is refused here, where it first comes in:
    stored or handed to an agent it fails later, as a 500 or worse."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise InvalidInput("the body is not UTF-8") from None
    except RecursionError:
        raise InvalidInput("the body is JSON nested too deeply") from None
    except ValueError as e:
        raise InvalidInput(f"the body is not valid JSON: {e}") from None
    if may_hold_surrogates(raw):
        where = lone_surrogate_at(data)
        if where is not None:
            raise InvalidInput(f"{where} is not valid Unicode text (a lone surrogate)")
    return data


def json_body() -> dict[str, Any]:
    raw = request.get_data(cache=True)
    data = parse_json(raw) if raw else None
    if not isinstance(data, dict):
        raise InvalidInput("the body must be a JSON object")
    return data


def reject_unknown(data: dict[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(data) - allowed)
    if extra:
        raise InvalidInput(f"unknown field(s): {', '.join(extra)}")


def get_str(
    data: dict[str, Any], key: str, *, required: bool = False, max_len: int = 255
) -> str | None:
    value = data.get(key)
    if value is None:
        if required:
            raise InvalidInput(f"'{key}' is required")
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"'{key}' must be a string")
    if len(value) > max_len:
        raise InvalidInput(f"'{key}' is longer than {max_len} characters")
    if "\x00" in value:
        raise InvalidInput(f"'{key}' contains a NUL character")
    return value


def get_name(data: dict[str, Any], key: str = "name", *, required: bool = True) -> str | None:
    value = get_str(data, key, required=required, max_len=64)
    if value is not None and not NAME_RE.fullmatch(value):
        raise InvalidInput(
            f"'{key}' must be 1-64 characters of letters, digits, '_', '.', '@', '-' "
            "and start with a letter or digit"
        )
    return value


def get_tags(data: dict[str, Any], key: str = "tags") -> list[str] | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise InvalidInput(f"'{key}' must be a list of strings")
    if len(value) > 64:
        raise InvalidInput(f"'{key}' has more than 64 entries")
    for t in value:
        if not TAG_RE.fullmatch(t):
            raise InvalidInput(f"tag {t[:70]!r} must be letters, digits, '_', '.', ':', '-'")
    return sorted(set(value))


def get_number(data: dict[str, Any], key: str, default: float, lo: float, hi: float) -> float:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise InvalidInput(f"'{key}' must be a number")
    if not lo <= value <= hi:
        raise InvalidInput(f"'{key}' must be between {lo:g} and {hi:g}")
    return float(value)


def get_bool(data: dict[str, Any], key: str, default: bool = False) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise InvalidInput(f"'{key}' must be true or false")
    return value


def int_arg(name: str, default: int | None, lo: int, hi: int) -> int | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(f"query argument '{name}' must be an integer") from None
    if not lo <= value <= hi:
        raise InvalidInput(f"query argument '{name}' must be between {lo} and {hi}")
    return value


def str_arg(name: str, max_len: int = 255) -> str | None:
    raw = request.args.get(name)
    if raw is not None and (len(raw) > max_len or "\x00" in raw):
        raise InvalidInput(f"query argument '{name}' is too long or has a NUL")
    return raw or None

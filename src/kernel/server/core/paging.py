"""Page cursors for lists in name order (servers, host status): the (name, id) a page ended
at, as opaque URL-safe text; anything that is not one is a clear 400."""

from __future__ import annotations

import base64
import binascii
import json

from kernel.exceptions import InvalidInput

PAGE_MAX = 1000  # rows per page of a paged list at most (and by default)


def encode_cursor(name: str, id_: int) -> str:
    return base64.urlsafe_b64encode(json.dumps([name, id_]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, int]:
    """The (name, id) a page ends at; InvalidInput for anything that is not a cursor."""
    try:
        name, id_ = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if isinstance(name, str) and isinstance(id_, int) and not isinstance(id_, bool):
            return name, id_
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        pass
    raise InvalidInput("after: not a page cursor (use the `next` of the page before)")

"""Server-sent events (text/event-stream), parsed from the bytes as they arrive. Pure."""

from __future__ import annotations

MAX_PENDING = 64 * 1024 * 1024


class Event:
    __slots__ = ("data", "id", "type")

    def __init__(self, type_: str, data: str, id_: str | None) -> None:
        self.type, self.data, self.id = type_, data, id_

    def __repr__(self) -> str:
        return f"Event({self.type!r}, {self.data[:40]!r}, id={self.id!r})"


class SseParser:
    """Feed it bytes in any pieces; it returns each complete event once.

    Follows the WHATWG rules the CLI needs: ``field: value`` lines (one optional space after
    the colon), ``:`` comments (keep-alives), several ``data`` lines joined by newlines, an
    event ending at a blank line, CR LF, LF or CR line ends, ``id`` remembered across events.
    """

    def __init__(self) -> None:
        self._pending = b""
        self._after_cr = False
        self._type = ""
        self._data: list[str] = []
        self.last_id: str | None = None

    def feed(self, chunk: bytes) -> list[Event]:
        if self._after_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]  # the LF of a CR LF split across two chunks
        if not chunk:
            return []
        self._after_cr = chunk.endswith(b"\r")
        text = self._pending + chunk
        lines = text.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        self._pending = lines.pop()
        if len(self._pending) > MAX_PENDING:
            raise ValueError("an event stream line is longer than 64 MiB")
        out = []
        for raw in lines:
            ev = self._line(raw.decode("utf-8", "replace"))
            if ev is not None:
                out.append(ev)
        return out

    def _line(self, line: str) -> Event | None:
        if not line:
            if not self._data and not self._type:
                return None
            ev = Event(self._type or "message", "\n".join(self._data), self.last_id)
            self._type, self._data = "", []
            return ev
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._type = value
        elif name == "id" and "\x00" not in value:
            self.last_id = value
        return None

"""Writing to the terminal or a pipe: colours only on a terminal, UTF-8 always, a one-line
progress bar on stderr that other output never tears (it is cleared before each write)."""

from __future__ import annotations

import os
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import BinaryIO

RESET = "\x1b[0m"
HOST_COLOURS = ("36", "33", "35", "32", "34", "96", "93", "95", "92", "94")
STATE_COLOURS = {
    "ok": "32",
    "online": "32",
    "finished": "32",
    "active": "32",
    "running": "36",
    "queued": "36",
    "pending": "36",
    "open": "31;1",
    "resolving": "33",
    "resolved": "32",
    "sent": "32",
    "unknown": "2",
    "not_run": "2",
    "failed": "31",
    "timed_out": "31",
    "cancelled": "33",
    "init_failed": "31",
    "unreachable": "31;1",
    "lost": "31;1",
    "offline": "31;1",
}


def colour_wanted(stream: object, mode: str = "auto") -> bool:
    """``always``/``never``, or ``auto``: a terminal, unless NO_COLOR is set or TERM=dumb."""
    if mode == "always":
        return True
    if mode == "never" or os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (OSError, ValueError):
        return False


class Style:
    """ANSI colours, or nothing."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._hosts: dict[str, str] = {}

    def paint(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}{RESET}" if self.enabled and code else text

    def host(self, name: str) -> str:
        if not self.enabled:
            return name
        code = self._hosts.get(name)
        if code is None:
            code = self._hosts[name] = HOST_COLOURS[len(self._hosts) % len(HOST_COLOURS)]
        return self.paint(name, code)

    def state(self, state: str) -> str:
        return self.paint(state, STATE_COLOURS.get(state, ""))

    def bold(self, text: str) -> str:
        return self.paint(text, "1")

    def dim(self, text: str) -> str:
        return self.paint(text, "2")


class Out:
    """stdout and stderr as UTF-8 bytes (remote output may hold any text, and the locale
    may not be UTF-8), with the progress bar kept on the last line of a terminal's stderr."""

    def __init__(self, colour: str = "auto") -> None:
        self.stdout: BinaryIO = sys.stdout.buffer
        self.stderr: BinaryIO = sys.stderr.buffer
        self.style = Style(colour_wanted(sys.stdout, colour))
        self.err_style = Style(colour_wanted(sys.stderr, colour))
        self.err_tty = colour_wanted(sys.stderr, "auto") or colour == "always"
        self.progress: Progress | None = None

    def write(self, text: str, *, err: bool = False) -> None:
        if self.progress is not None:
            self.progress.clear()
        data = text.encode("utf-8", "replace")
        if err:
            self.stderr.write(data)
        else:
            self.stdout.write(data)

    def line(self, text: str = "", *, err: bool = False) -> None:
        self.write(text + "\n", err=err)

    def flush(self) -> None:
        self.stdout.flush()
        if self.progress is not None:
            self.progress.draw()
        self.stderr.flush()

    def note(self, text: str) -> None:
        """A message of the CLI's own (not remote output): to stderr."""
        self.line(text, err=True)


class Progress:
    """``[#####·····] 5/10 hosts done, 1 not ok, 2.3 s`` on a terminal's stderr."""

    WIDTH = 24

    def __init__(self, out: Out, total: int) -> None:
        self.out = out
        self.total = total
        self.done = 0
        self.bad = 0
        self.started = time.monotonic()
        self._shown = False
        self._drawn_at = 0.0

    def update(self, done: int, bad: int) -> None:
        self.done, self.bad = done, bad

    def text(self) -> str:
        fill = int(self.WIDTH * self.done / self.total) if self.total else self.WIDTH
        bar = "#" * fill + "." * (self.WIDTH - fill)
        bad = f", {self.bad} not ok" if self.bad else ""
        took = time.monotonic() - self.started
        return f"[{bar}] {self.done}/{self.total} hosts done{bad}, {took:.1f} s"

    def draw(self) -> None:
        now = time.monotonic()
        if self._shown and now - self._drawn_at < 0.05 and self.done < self.total:
            return
        self.out.stderr.write(("\r" + self.text() + "\x1b[K").encode())
        self._shown, self._drawn_at = True, now

    def clear(self) -> None:
        if self._shown:
            self.out.stderr.write(b"\r\x1b[K")
            self.out.stderr.flush()
            self._shown = False

    def stop(self) -> None:
        self.clear()
        self.out.progress = None

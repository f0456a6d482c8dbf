"""The ``kernel`` entry point: the exec fast path, everything else through click, and the one
place where errors become a line on stderr and an exit status (never a traceback)."""

from __future__ import annotations

import os
import sys

from . import errors
from .errors import CliError, Interrupted, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    _on_termination()
    status = guarded(lambda: dispatch(args))
    if argv is None:  # the `kernel` command itself, not a caller in this process
        exit_now(status)
    return status


def exit_now(status: int) -> None:
    """Flush and leave without the interpreter's teardown (freeing every module and object:
    ~2.5 ms of CPU, more wall time on a busy machine, for nothing — the process is over). A
    reader gone by the final flush ends the command as a SIGPIPE would, quietly."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            status = status or 141
    os._exit(status)


def _on_termination() -> None:
    """SIGTERM and SIGHUP act as Ctrl-C. (``_signal``, the C module under ``signal``, is
    loaded by every interpreter; ``signal`` itself would cost ~3 ms.)"""
    import _signal

    def handler(signum: int, _frame: object) -> None:
        raise Interrupted(signum)

    for signum in (_signal.SIGTERM, _signal.SIGHUP):
        _signal.signal(signum, handler)


def dispatch(args: list[str]) -> int:
    check_utf8(args)
    if "_KERNEL_COMPLETE" not in os.environ:  # shell completion is click's business
        from .exec_args import parse_fast

        fast = parse_fast(args)
        if fast is not None:
            from .execute import run_exec

            return run_exec(fast)
    from .app import run_click

    return run_click(args)


def check_utf8(args: list[str]) -> None:
    """Arguments reach the server as JSON text; bytes that are not UTF-8 (kept by Python as
    lone surrogates) cannot, so they are refused here with the position and the bytes."""
    for i, arg in enumerate(args, 1):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            raw = os.fsencode(arg)
            raise UsageError(
                f"argument {i} is not valid UTF-8 ({raw[:60]!r}); Kernel sends text as UTF-8"
            ) from None


def guarded(fn: Callable[[], int]) -> int:
    try:
        return fn()
    except CliError as e:
        _say(f"kernel: {e.message}")
        return e.exit_code
    except KeyboardInterrupt as e:
        word, status = errors.interruption(e)
        _say(f"kernel: {word}")
        return status
    except BrokenPipeError:
        # Our reader went away (``kernel … | head``): stop quietly, like a process SIGPIPE
        # would have killed; stdout is pointed at /dev/null so the final flush cannot fail.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 141
    except Exception as e:
        if os.environ.get("KERNEL_DEBUG"):
            raise
        _say(f"kernel: internal error: {type(e).__name__}: {e} (KERNEL_DEBUG=1 shows where)")
        return errors.ERROR


def _say(text: str) -> None:
    try:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())

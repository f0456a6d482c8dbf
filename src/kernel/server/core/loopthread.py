"""A background asyncio loop with one database thread: what the job runner and the status
poller are each built on.

`start()` runs ``_main()`` in a new event loop on a daemon thread; `stop()` sets
``_stopping`` from any thread and joins. Inside the loop, ``_db(fn, *args)`` runs blocking
database work on the one database thread (one writer, in order), and ``_spawn(coro, what)``
starts a task that is tracked (ended when the loop ends) and whose crash is logged.
Subclasses implement ``_main`` and may override ``_prepare`` (in the loop, before ``_main``)
and ``_close`` (in the loop, after it)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


class LoopThread:
    name = "kernel-loop"

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._dbx: ThreadPoolExecutor | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- called from other threads -----------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._dbx = ThreadPoolExecutor(1, thread_name_prefix=f"{self.name}-db")
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._thread_main, args=(ready,), name=self.name, daemon=True
        )
        self._thread.start()
        ready.wait(10)

    def stop(self, timeout: float = 10.0) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(self._stopping.set)
        thread.join(timeout)
        self._thread = None
        if self._dbx is not None:
            self._dbx.shutdown(wait=True)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- the loop --------------------------------------------------------------------------------
    def _thread_main(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._stopping = asyncio.Event()
        self._prepare()
        ready.set()
        try:
            loop.run_until_complete(self._main())
        finally:
            loop.run_until_complete(self._end_tasks())
            loop.run_until_complete(self._close())
            loop.close()
            self._loop = None

    def _prepare(self) -> None:
        """In the new loop's thread, before ``_main``: make the loop's own objects here."""

    async def _main(self) -> None:
        raise NotImplementedError

    async def _close(self) -> None:
        """After ``_main`` returned: release what the loop held (connections, …)."""

    async def _end_tasks(self) -> None:
        left = [t for t in self._tasks if not t.done()]
        for t in left:
            t.cancel()
        await asyncio.gather(*left, return_exceptions=True)

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        assert self._dbx is not None
        return await asyncio.get_running_loop().run_in_executor(self._dbx, fn, *args)

    def _spawn(self, coro: Any, what: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)  # kept so the loop's end can end them: none outlives it
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda t: _log_failure(t, f"{self.name} {what}"))
        return task


def _log_failure(task: asyncio.Task[Any], what: str) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("%s crashed", what, exc_info=task.exception())

"""What a long-running server process sets up for itself once: room for a connection per
agent (the open-file limit) and a garbage collector that does not walk the whole heap every
few thousand allocations. Called once by `kernel-server` before it serves (server/cli.py) —
not in library use or the test suite's processes, which keep Python's defaults."""

from __future__ import annotations

import gc
import logging
import resource
import threading

log = logging.getLogger(__name__)

# gen0 collections every 10 000 net allocations instead of 700: a status round or a job on
# thousands of hosts allocates millions of short-lived objects, and each collection of the
# young generations also costs time in proportion to what survived into them.
GC_THRESHOLD = (10_000, 20, 20)
_done = threading.Lock()
_tuned = False


def raise_nofile() -> int:
    """Raise the soft open-file limit to the hard one: the runner and the poller each keep a
    connection to every agent (10 000 hosts: 20 000 descriptors), and the usual soft limit
    is 1024 (systemd's default hard limit is 524 288). Returns the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as e:  # pragma: no cover - an odd platform
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, hard, e)
    return int(soft)


def tune() -> None:
    """Once per process: the open-file limit, and the collector. Everything alive now —
    modules, the app, its settings — is moved out of the collector's way (`gc.freeze`), so
    a full collection walks only what was made since; and young collections run less
    often. (Measured at 3 000 hosts before this and the shared agent session: 30 full
    collections of ~0.3 s each, a third of the server's CPU; bench/bench_scale.py.)"""
    global _tuned
    with _done:
        if _tuned:
            return
        _tuned = True
    raise_nofile()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)

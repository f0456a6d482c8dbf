"""The catalogue as last scanned: kept until "refresh services" rescans the folder (the
poller reads it too, for the units it asks every host about)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from kernel.server.services import catalog


class CatalogueCache:
    """The last scan of ``<data dir>/service`` (thread-safe; the poller reads it too)."""

    def __init__(self, service_dir: Path) -> None:
        self.service_dir = service_dir
        self._lock = threading.Lock()
        self._cat: catalog.Catalogue | None = None
        self.scanned_at = 0.0

    def get(self) -> catalog.Catalogue:
        with self._lock:
            if self._cat is None:
                self._scan()
            assert self._cat is not None
            return self._cat

    def refresh(self) -> catalog.Catalogue:
        with self._lock:
            self._scan()
            assert self._cat is not None
            return self._cat

    def _scan(self) -> None:
        self._cat = catalog.scan(self.service_dir)
        self.scanned_at = time.time()

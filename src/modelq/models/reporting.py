"""Residency figures out of the worker process: into the job store, where the API reads them.

A prefork worker's models live in its children, where Celery's remote-control
commands cannot see them; the job store can. Each process replaces its own rows
after every load and eviction, and at most every few seconds for hit counts.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from datetime import datetime, timezone
from typing import Any

from modelq.models.registry import ModelSpec
from modelq.models.residency import ResidencyHooks

log = logging.getLogger(__name__)

#: Set by the worker at start (its Celery hostname); other processes use the host name.
worker_name: str | None = None


class StoreReporter(ResidencyHooks):
    """Writes this process's residency figures to the job store."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        self._lock = threading.Lock()
        self._last_flush = 0.0

    def after_load(self, spec: ModelSpec, device: str, nbytes: int, seconds: float) -> None:
        self.flush()

    def on_evict(self, spec: ModelSpec, device: str, nbytes: int, reason: str) -> None:
        self.flush()

    def flush(self) -> None:
        with self._lock:
            self._last_flush = time.monotonic()
            stats = self.runtime.residency.stats()
            rows = [
                {
                    "model": s.name,
                    "device": s.device or "-",
                    "resident": s.resident,
                    "bytes": s.bytes,
                    "loads": s.loads,
                    "evictions": s.evictions,
                    "hits": s.hits,
                    "load_seconds": s.load_seconds,
                    "last_used": datetime.fromtimestamp(s.last_used, timezone.utc) if s.last_used else None,
                }
                for s in stats
            ]
            try:
                self.runtime.store.report_residency(worker_name or socket.gethostname(), os.getpid(), rows)
            except Exception:  # figures are for people; a failed write must not fail a job
                log.exception("could not write residency figures")

    def flush_if_stale(self, every: float = 2.0) -> None:
        if time.monotonic() - self._last_flush >= every:
            self.flush()

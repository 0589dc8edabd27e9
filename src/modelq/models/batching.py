"""Dynamic batching: small requests for one model, running at once in one worker process,
share a single forward pass.

    vectors = modelq.batch_call(("embed", model_name), texts, model.encode)

The first caller to arrive becomes the batch's leader: it waits up to
``max_wait_ms`` (or until ``max_size`` items are pending), runs ``fn`` once on
everything gathered, checks it returned one output per input, and hands each
caller its own slice, in order. No extra thread; callers are the worker pool's
threads (use a ``threads`` pool for batched queues). ``celery-batches`` was the
other candidate; it pins ``celery<5.7``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class _Request:
    items: Sequence[Any]
    done: threading.Event = field(default_factory=threading.Event)
    outputs: list[Any] | None = None
    error: BaseException | None = None


@dataclass
class BatchStats:
    batches: int = 0
    items: int = 0
    largest: int = 0

    @property
    def mean_size(self) -> float:
        return self.items / self.batches if self.batches else 0.0


class Batcher:
    """Combines concurrent calls for one key."""

    def __init__(self, max_size: int, max_wait_ms: float) -> None:
        self.max_size = max_size
        self.max_wait = max_wait_ms / 1000.0
        self.stats = BatchStats()
        self._lock = threading.Condition()
        self._pending: list[_Request] = []
        self._leader_waiting = False

    def call(self, items: Sequence[Any], fn: Callable[[list[Any]], Sequence[Any]]) -> list[Any]:
        request = _Request(items=list(items))
        with self._lock:
            self._pending.append(request)
            leader = not self._leader_waiting
            if leader:
                self._leader_waiting = True
            elif self._pending_items() >= self.max_size:
                self._lock.notify_all()  # wake the leader: the batch is full
        if leader:
            self._lead(fn)
        request.done.wait()
        if request.error is not None:
            raise request.error
        assert request.outputs is not None
        return request.outputs

    def _pending_items(self) -> int:
        return sum(len(r.items) for r in self._pending)

    def _lead(self, fn: Callable[[list[Any]], Sequence[Any]]) -> None:
        deadline = time.monotonic() + self.max_wait
        with self._lock:
            while self._pending_items() < self.max_size:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._lock.wait(remaining)
            batch, size = [], 0
            while self._pending and (not batch or size + len(self._pending[0].items) <= self.max_size):
                request = self._pending.pop(0)
                batch.append(request)
                size += len(request.items)
            # Whoever is left waits for the next leader: the first of them takes over.
            self._leader_waiting = False
            if self._pending:
                self._leader_waiting = True
                successor = self._pending[0]
            else:
                successor = None
        self._run(batch, fn)
        if successor is not None:
            threading.Thread(target=self._lead, args=(fn,), daemon=True).start()

    def _run(self, batch: list[_Request], fn: Callable[[list[Any]], Sequence[Any]]) -> None:
        items = [item for request in batch for item in request.items]
        try:
            outputs = list(fn(items))
            if len(outputs) != len(items):
                raise RuntimeError(f"a batch of {len(items)} inputs returned {len(outputs)} outputs")
        except BaseException as exc:  # every caller in the batch gets the error
            for request in batch:
                request.error = exc
                request.done.set()
            return
        with self._lock:
            self.stats.batches += 1
            self.stats.items += len(items)
            self.stats.largest = max(self.stats.largest, len(items))
        start = 0
        for request in batch:
            request.outputs = outputs[start : start + len(request.items)]
            start += len(request.items)
            request.done.set()


_batchers: dict[Hashable, Batcher] = {}
_registry_lock = threading.Lock()


def batcher_for(key: Hashable, max_size: int = 32, max_wait_ms: float = 5.0) -> Batcher:
    with _registry_lock:
        batcher = _batchers.get(key)
        if batcher is None:
            batcher = _batchers[key] = Batcher(max_size, max_wait_ms)
        return batcher


def batch_call(
    key: Hashable,
    items: Sequence[Any],
    fn: Callable[[list[Any]], Sequence[Any]],
    *,
    max_size: int | None = None,
    max_wait_ms: float | None = None,
) -> list[Any]:
    """Run ``fn`` on ``items`` together with other callers' items for the same ``key``.

    Args:
        key: what may share a batch (a model name, plus anything that changes ``fn``'s meaning).
        items: this caller's inputs.
        fn: takes a list of inputs, returns one output per input.
        max_size: most items per batch (default ``MODELQ_BATCH_MAX_SIZE``, from the running job's settings).
        max_wait_ms: longest a batch waits to fill (default ``MODELQ_BATCH_MAX_WAIT_MS``).

    Returns:
        ``fn``'s outputs for this caller's items, in order.
    """
    if max_size is None or max_wait_ms is None:
        from modelq.tasks import _current

        ctx = _current.get()
        settings = ctx.settings if ctx is not None and ctx.settings is not None else None
        max_size = max_size or (settings.batch_max_size if settings else 32)
        max_wait_ms = max_wait_ms if max_wait_ms is not None else (settings.batch_max_wait_ms if settings else 5.0)
    return batcher_for(key, max_size, max_wait_ms).call(items, fn)

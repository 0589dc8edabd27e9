"""Dynamic batching: small requests for one model, running at once in one worker process,
share a single forward pass, and a loaded model runs one forward pass at a time.

    vectors = modelq.batch_call(("embed", model_name), texts, model.encode)

What may run at the same time (the rule every model workload follows):

* **One batch at a time per key.** Callers queue their items; one of them (the leader) runs
  ``fn`` on everything gathered, checks it returned one output per input and hands each caller
  its own slice, in order. While a batch runs, new callers gather for the next one; when it
  ends, the first of them leads the next batch. No extra thread: callers are the worker pool's
  threads (use a ``threads`` pool for batched queues). ``celery-batches`` was the other
  candidate; it pins ``celery<5.7``.
* **A batch starts when it is full, or when its oldest request has waited ``max_wait_ms``.**
  An idle batcher waits a little to gather; a busy one starts the next batch at once, since its
  callers already waited through the previous one.
* **One forward pass at a time per loaded model, and per device** (:func:`exclusive`). Hugging
  Face fast tokenizers keep padding and truncation as state on the Rust object, so two threads
  tokenizing with one tokenizer at once can fail ("Unable to create tensor ..."); and two
  forward passes on one device only split its cores or its memory. So everything that touches
  a model's tokenizer or weights (tokenize, forward, token counts) runs inside
  ``exclusive(model)``; pure Python around it (validation, slicing, normalising) does not.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass
class _Request:
    items: Sequence[Any]
    arrived: float = field(default_factory=time.monotonic)
    done: threading.Event = field(default_factory=threading.Event)
    #: Set when this request's thread is to lead the next batch.
    lead: bool = False
    outputs: list[Any] | None = None
    error: BaseException | None = None


@dataclass
class BatchStats:
    batches: int = 0
    items: int = 0
    largest: int = 0


class Batcher:
    """Combines concurrent calls for one key; runs one batch at a time."""

    def __init__(self, max_size: int, max_wait_ms: float) -> None:
        self.max_size = max_size
        self.max_wait = max_wait_ms / 1000.0
        self.stats = BatchStats()
        self._cond = threading.Condition()
        self._pending: deque[_Request] = deque()
        #: True from the moment a leader exists until no request is pending and no batch runs.
        self._busy = False

    def call(self, items: Sequence[Any], fn: Callable[[list[Any]], Sequence[Any]]) -> list[Any]:
        request = _Request(items=list(items))
        with self._cond:
            self._pending.append(request)
            if not self._busy:
                self._busy = True
                request.lead = True
            self._cond.notify_all()  # a forming leader may now have a full batch
            while not request.lead and not request.done.is_set():
                self._cond.wait()
        if not request.done.is_set():
            self._lead(fn)
        if request.error is not None:
            raise request.error
        assert request.outputs is not None
        return request.outputs

    def _lead(self, fn: Callable[[list[Any]], Sequence[Any]]) -> None:
        with self._cond:
            while self._pending_items() < self.max_size:
                remaining = self._pending[0].arrived + self.max_wait - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            batch, size = [], 0
            while self._pending and (not batch or size + len(self._pending[0].items) <= self.max_size):
                request = self._pending.popleft()
                batch.append(request)
                size += len(request.items)
        try:
            self._run(batch, fn)
        finally:
            with self._cond:
                if self._pending:  # the oldest waiting caller leads the next batch
                    self._pending[0].lead = True
                else:
                    self._busy = False
                self._cond.notify_all()

    def _pending_items(self) -> int:
        return sum(len(r.items) for r in self._pending)

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
        with self._cond:
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

    Batches for one key run one at a time. When ``fn`` uses a model that other keys use too,
    wrap its body in :func:`exclusive` so their forward passes do not overlap either.

    Args:
        key: what may share a batch (a model name, plus anything that changes ``fn``'s meaning).
        items: this caller's inputs.
        fn: takes a list of inputs, returns one output per input.
        max_size: most items per batch (default ``MODELQ_BATCH_MAX_SIZE``, from the running job's settings).
        max_wait_ms: longest an idle batcher waits to fill a batch (default ``MODELQ_BATCH_MAX_WAIT_MS``).

    Returns:
        ``fn``'s outputs for this caller's items, in order.

    Raises:
        RuntimeError: ``fn`` returned a different number of outputs than it got inputs.
    """
    if max_size is None or max_wait_ms is None:
        from modelq.tasks import current_settings

        settings = current_settings()
        max_size = max_size or settings.batch_max_size
        max_wait_ms = max_wait_ms if max_wait_ms is not None else settings.batch_max_wait_ms
    return batcher_for(key, max_size, max_wait_ms).call(items, fn)


#: Padded tokens per forward pass when ``batch_max_tokens`` is unset, by device kind: measured with
#: all-MiniLM-L6-v2 on texts of 1-266 tokens, a CPU runs groups of about 256 padded tokens fastest
#: (1.9x one padded batch of 32); a GPU wants large batches.
DEFAULT_MAX_TOKENS = {"cpu": 256, "cuda": 16384, "mps": 4096}


def max_tokens_for(device: str, settings: Any = None) -> int:
    """Padded tokens per forward pass on ``device``: ``batch_max_tokens``, or the device kind's default."""
    configured = getattr(settings, "batch_max_tokens", None)
    return configured or DEFAULT_MAX_TOKENS.get(device.split(":")[0], DEFAULT_MAX_TOKENS["cpu"])


def token_groups(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Indices of ``lengths`` in groups for one forward pass each: sorted by length, and each group's
    padded size (its longest x its count) within ``max_tokens`` (a group has at least one item)."""
    groups: list[list[int]] = []
    group: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        # sorted ascending: this item is the group's longest so far
        if group and lengths[index] * (len(group) + 1) > max_tokens:
            groups.append(group)
            group = []
        group.append(index)
    if group:
        groups.append(group)
    return groups


class _Locks:
    """A lock per object (weakly held where the object allows it) and one per device."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._by_object: weakref.WeakKeyDictionary[Any, threading.Lock] = weakref.WeakKeyDictionary()
        self._by_id: dict[int, threading.Lock] = {}
        self._by_device: dict[str, threading.Lock] = {}

    def for_object(self, obj: Any) -> threading.Lock:
        with self._guard:
            try:
                return self._by_object.setdefault(obj, threading.Lock())
            except TypeError:  # not weak-referenceable: held by id for the life of the process
                return self._by_id.setdefault(id(obj), threading.Lock())

    def for_device(self, device: str) -> threading.Lock:
        with self._guard:
            return self._by_device.setdefault(device, threading.Lock())


_locks = _Locks()


def device_of(model: Any) -> str:
    """The device kind a loaded model runs on (``cpu``, ``cuda:0`` ...); ``cpu`` when it does not say."""
    device = getattr(model, "device", None)
    return str(device) if device is not None else "cpu"


@contextmanager
def exclusive(model: Any, *, poll: Callable[[], None] | None = None, poll_seconds: float = 0.25) -> Iterator[None]:
    """Hold ``model`` (and its device) for one forward pass: nothing else in this process uses either meanwhile.

    Args:
        model: the loaded model object (a sentence-transformers model, a diffusers pipeline ...).
        poll: called every ``poll_seconds`` while waiting (e.g. a job's cancellation check, which raises).
    """
    model_lock, device_lock = _locks.for_object(model), _locks.for_device(device_of(model))
    with _acquired(model_lock, poll, poll_seconds), _acquired(device_lock, poll, poll_seconds):
        yield


@contextmanager
def _acquired(lock: threading.Lock, poll: Callable[[], None] | None, poll_seconds: float) -> Iterator[None]:
    if poll is None:
        lock.acquire()
    else:
        while not lock.acquire(timeout=poll_seconds):
            poll()
    try:
        yield
    finally:
        lock.release()

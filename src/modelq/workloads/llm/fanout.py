"""Many LLM calls in flight from one worker process: its call threads, and one job's map over them.

Every worker process that runs ``llm`` jobs has one pool of call threads, ``MODELQ_LLM_MAX_IN_FLIGHT``
of them (default 64): that is the most calls the process has in flight, however many jobs it
runs at once. A job keeps at most its window of calls queued on the pool (its own
``max_in_flight``, else the pool size) and queues the next prompt as each call ends, so jobs that
run side by side share the threads in turn instead of one waiting for the other to drain.

Why threads: measured against asyncio+httpx and gevent on this project's 2-core machine (docs/llm.md),
plain threads with synchronous httpx used the least CPU per call and came
closest to the ideal wall time at 500 in flight, with the same memory; they need no monkey
patching, run inside any Celery pool (prefork, solo, threads, gevent), and let the job store and
the rate limiter use their ordinary synchronous clients.

A call thread never touches the job store: progress is counted here and written by the job's own
thread, coalesced, so database connections do not grow with the calls in flight.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from modelq.workloads.llm.client import CallFailed, ChatEndpoint
from modelq.workloads.llm.ratelimit import RateLimiter, estimate_tokens
from modelq.workloads.llm.retry import RetryPolicy

Item = dict[str, Any]


class Cooldown:
    """An endpoint that answered 429/503 with ``Retry-After`` gets no new call from this process until then."""

    def __init__(self) -> None:
        self._until = 0.0

    def extend(self, seconds: float) -> None:
        self._until = max(self._until, time.monotonic() + seconds)

    def wait(self, stop: threading.Event) -> None:
        remaining = self._until - time.monotonic()
        if remaining > 0:
            stop.wait(remaining)


@dataclass
class _Process:
    """What a worker process keeps between jobs: call threads, connection pools, cooldowns."""

    pid: int
    pool: ThreadPoolExecutor | None = None
    pool_size: int = 0
    endpoints: dict[tuple, tuple[ChatEndpoint, Cooldown]] = field(default_factory=dict)


_state = _Process(pid=os.getpid())
_guard = threading.Lock()


def _current() -> _Process:
    global _state
    if _state.pid != os.getpid():  # forked: the parent's threads and sockets are not ours
        _state = _Process(pid=os.getpid())
    return _state


def call_pool(size: int) -> ThreadPoolExecutor:
    """This process's call threads (created on first use, after any fork)."""
    with _guard:
        state = _current()
        if state.pool is None or state.pool_size != size:
            # A different size (other settings in this process): a new pool; jobs already on the
            # old one finish there, and its idle threads go with it.
            state.pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="modelq-llm")
            state.pool_size = size
        return state.pool


def endpoint_for(name: str, base_url: str, api_key: str | None, max_connections: int) -> tuple[ChatEndpoint, Cooldown]:
    """This process's connection pools for an endpoint (shared by every job that calls it)."""
    key = (name, base_url, api_key, max_connections)
    with _guard:
        state = _current()
        found = state.endpoints.get(key)
        if found is None:
            found = state.endpoints[key] = (
                ChatEndpoint(name, base_url, api_key=api_key, max_connections=max_connections),
                Cooldown(),
            )
        return found


# One call -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    """How a job calls its endpoint: where, how long, how often, under which limit."""

    endpoint: ChatEndpoint
    cooldown: Cooldown
    timeout: float
    policy: RetryPolicy
    limiter: RateLimiter | None = None

    def call(self, body: dict[str, Any], stop: threading.Event) -> Item:
        """One prompt to its answer or its error, retrying what can be retried.

        Returns:
            ``{"text", "usage", "finish_reason", "attempts", "error"}``; ``error`` is None on success,
            else ``{"type", "status", "message"}`` (type ``cancelled`` when ``stop`` ended it first).
        """
        estimated = estimate_tokens(body["messages"], body.get("max_tokens"))
        attempts = 0
        while True:
            self.cooldown.wait(stop)
            if stop.is_set() or (self.limiter is not None and not self.limiter.acquire(estimated, stop)):
                return cancelled_item(attempts)
            attempts += 1
            try:
                completion = self.endpoint.complete(body, self.timeout)
            except CallFailed as exc:
                if exc.retry_after is not None and exc.status in (429, 503):
                    self.cooldown.extend(min(exc.retry_after, self.policy.cap))
                if not exc.retryable or attempts > self.policy.max_retries:
                    error = exc.as_item_error()
                    if attempts > 1:
                        error["message"] += f" (after {attempts} attempts)"
                    return {"text": None, "usage": None, "finish_reason": None, "attempts": attempts, "error": error}
                if stop.wait(self.policy.delay(attempts, exc.retry_after)):
                    return cancelled_item(attempts)
                continue
            if self.limiter is not None and completion.usage:
                self.limiter.settle(estimated, completion.usage.get("total_tokens"))
            return {
                "text": completion.text,
                "usage": completion.usage,
                "finish_reason": completion.finish_reason,
                "attempts": attempts,
                "error": None,
            }


def cancelled_item(attempts: int = 0) -> Item:
    return {
        "text": None,
        "usage": None,
        "finish_reason": None,
        "attempts": attempts,
        "error": {"type": "cancelled", "status": None, "message": "not finished: the job was cancelled"},
    }


# One job's map -------------------------------------------------------------------------------


class MapRun:
    """``call(i, stop)`` for every ``i < n`` on the pool, at most ``window`` queued at once, results in order.

    The job's thread starts it, then watches ``completed`` and waits on ``done``; :meth:`stop`
    issues no further call and lets the job return at once with what finished.
    """

    def __init__(
        self,
        pool: ThreadPoolExecutor,
        n: int,
        call: Callable[[int, threading.Event], Item],
        *,
        window: int,
        stop_on_error: bool = False,
    ) -> None:
        self.n = n
        self.results: list[Item | None] = [None] * n
        self.completed = 0
        self.failed = 0
        #: With ``stop_on_error``: the first prompt that failed (its index).
        self.first_error: int | None = None
        self.stopping = threading.Event()
        self.done = threading.Event()
        self._pool = pool
        self._call = call
        self._window = max(1, window)
        self._stop_on_error = stop_on_error
        self._lock = threading.Lock()
        self._next = 0
        self._queued = 0

    def start(self) -> MapRun:
        with self._lock:
            for _ in range(min(self._window, self.n)):
                self._launch()
            if self._queued == 0:  # nothing to do, or nothing could be queued
                self.done.set()
        return self

    def _launch(self) -> None:  # with self._lock held
        try:
            self._pool.submit(self._run, self._next)
        except RuntimeError:  # the interpreter is shutting down: no new call
            self.stopping.set()
            return
        self._next += 1
        self._queued += 1

    def _run(self, index: int) -> None:
        try:
            item = self._call(index, self.stopping)
        except Exception as exc:  # noqa: BLE001 - a bug must not lose the item, nor stall the job
            item = {
                "text": None,
                "usage": None,
                "finish_reason": None,
                "attempts": 0,
                "error": {"type": "internal", "status": None, "message": f"{type(exc).__name__}: {exc}"},
            }
        with self._lock:
            self._queued -= 1
            if item["error"] is None or item["error"]["type"] != "cancelled":
                self.results[index] = item
                self.completed += 1
                if item["error"] is not None:
                    self.failed += 1
                    if self._stop_on_error and self.first_error is None:
                        self.first_error = index
                        self.stopping.set()
            if not self.stopping.is_set() and self._next < self.n:
                self._launch()
            if self._queued == 0 and (self.stopping.is_set() or self._next >= self.n):
                self.done.set()

    def stop(self) -> None:
        """Issue no further call (queued ones end as cancelled without calling); does not wait."""
        self.stopping.set()
        with self._lock:
            if self._queued == 0:
                self.done.set()

    def snapshot(self) -> list[Item]:
        """The results so far, in input order; unfinished prompts as ``cancelled``."""
        with self._lock:
            return [dict(item) if item is not None else cancelled_item() for item in self.results]

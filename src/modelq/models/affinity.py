"""Model affinity: a worker keeps serving the model it holds while that model has queued jobs.

Jobs for a model go to a queue of their own, ``<queue>.model.<name>`` (see
:func:`model_queue`). A controller thread in each worker watches the backlog in
the job store and tells the worker's consumer which model queues to read, through
Celery's own ``add_consumer`` / ``cancel_consumer`` control commands:

* nothing queued anywhere: read every model queue, so a new job starts at once;
* enough room for every model with a backlog: read all of their queues;
* otherwise read the queues of the models it holds while they have a backlog, and
  switch when that backlog is empty or another model's oldest job has waited longer
  than ``MODELQ_AFFINITY_MAX_WAIT`` seconds (bounded wait: nothing starves).

A mixed stream over two models with a budget of one therefore costs a model switch
per backlog drained, not per job.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import Any

log = logging.getLogger(__name__)

MODEL_QUEUE_SEPARATOR = ".model."
TICK_SECONDS = 0.1


def model_queue(queue: str, model: str) -> str:
    return f"{queue}{MODEL_QUEUE_SEPARATOR}{model}"


def model_of(queue: str) -> str | None:
    base, sep, model = queue.partition(MODEL_QUEUE_SEPARATOR)
    return model if sep else None


def choose_queues(
    *,
    backlog: dict[str, tuple[int, datetime]],
    held: Iterable[str],
    known: Iterable[str],
    capacity: int | None,
    max_wait: float,
    now: datetime | None = None,
) -> set[str]:
    """The model queues a worker should read (a pure function: the policy, testable alone).

    Args:
        backlog: queued jobs per model queue: (count, oldest created_at).
        held: model queues whose model this worker holds now.
        known: every model queue this worker could serve.
        capacity: how many models it can hold at once (None: no limit).
        max_wait: seconds after which a waiting model gets its turn.
    """
    now = now or datetime.now(timezone.utc)
    waiting = {q: v for q, v in backlog.items() if v[0] > 0}
    if not waiting:
        return set(known) | set(held)
    if capacity is None or len(waiting) <= capacity:
        return set(waiting)
    overdue = sorted((q for q, (_, oldest) in waiting.items() if (now - oldest).total_seconds() > max_wait),
                     key=lambda q: waiting[q][1])  # fmt: skip
    keep = [q for q in held if q in waiting]
    by_size = sorted(waiting, key=lambda q: (-waiting[q][0], waiting[q][1]))
    chosen: list[str] = []
    for queue in [*overdue, *keep, *by_size]:
        if queue not in chosen:
            chosen.append(queue)
        if len(chosen) == capacity:
            break
    return set(chosen)


def sticky_queues(*, consumed: set[str], backlog: dict[str, tuple[int, datetime]],
                  held: Callable[[], set[str]]) -> set[str]:
    """The model queues to keep reading: our own earlier choice, once we have made one.

    While the worker reads a subset of the queues with a backlog, that choice stands
    until :func:`choose_queues` changes it. A job fetched before the choice was made (a
    "stray", prefetched while every queue was read) may load its model for a moment;
    following that load would switch queues, strand the prefetched jobs of the other
    model as new strays, and feed a loop of switches. Only when nothing has been chosen
    yet does the model the worker holds decide.
    """
    waiting = {q for q, (count, _) in backlog.items() if count > 0}
    chosen = consumed & waiting
    if chosen and not waiting <= consumed:
        return chosen
    holding = held()
    # Between models (one evicted, the next not reported yet): stay with what we read.
    return holding if holding & waiting else holding | chosen


class AffinityController:
    """Steers one worker's consumer between model queues (runs in the worker's main process)."""

    def __init__(self, app: Any, hostname: str, base_queues: list[str], capacity: int | None,
                 *, in_process: bool = False) -> None:  # fmt: skip
        self.app = app
        #: solo and threads pools run jobs in this process: read its residency directly.
        self.in_process = in_process
        self.hostname = hostname
        self.base_queues = base_queues
        self.capacity = capacity
        self.settings = app.modelq.settings
        self.store = app.modelq.store
        self.consumed: set[str] = set()
        self.switches = 0
        self._stop = threading.Event()

    def known_queues(self) -> set[str]:
        """Queues of the models that tasks on this worker's queues use by default."""
        from modelq.tasks import registered_tasks

        known = set()
        for spec in registered_tasks().values():
            base = self.settings.queue_for(spec.name, spec.queue)
            if base in self.base_queues and spec.name in self.app.tasks:
                known.update(model_queue(base, name) for name in spec.models)
        return known

    def held_models(self) -> set[str]:
        """Models this worker holds, or is loading: a load in progress counts, so a switch sticks."""
        if self.in_process:
            return self.app.modelq.residency.held_or_loading()
        return {row["model"] for row in self.store.residency() if row["worker"] == self.hostname and row["resident"]}

    def tick(self) -> None:
        backlog: dict[str, tuple[int, datetime]] = {}
        for base in self.base_queues:
            backlog.update(self.store.backlog(f"{base}{MODEL_QUEUE_SEPARATOR}"))
        held = sticky_queues(consumed=self.consumed, backlog=backlog,
                             held=lambda: {model_queue(base, name) for name in self.held_models()
                                           for base in self.base_queues})  # fmt: skip
        desired = choose_queues(backlog=backlog, held=held, known=self.known_queues() | set(backlog),
                                capacity=self.capacity, max_wait=self.settings.affinity_max_wait)  # fmt: skip
        self.apply(desired)

    def apply(self, desired: set[str]) -> None:
        control, on_broker = self.app.control, self.settings.broker_queue
        for queue in sorted(desired - self.consumed):
            control.add_consumer(on_broker(queue), exchange=on_broker(queue), routing_key=on_broker(queue),
                                 destination=[self.hostname], reply=True, timeout=2.0)  # fmt: skip
        for queue in sorted(self.consumed - desired):
            control.cancel_consumer(on_broker(queue), destination=[self.hostname], reply=True, timeout=2.0)
        if desired != self.consumed:
            if self.consumed and desired - self.consumed:
                self.switches += 1
            log.debug("affinity: reading %s", ", ".join(sorted(desired)) or "no model queue")
            self.consumed = desired

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # the broker or database blinked: try again next tick
                log.debug("affinity tick failed", exc_info=True)
            self._stop.wait(TICK_SECONDS)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="modelq-affinity", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()


def model_capacity(settings: Any, devices: Iterable[str]) -> int | None:
    """How many models one worker process holds at once on these devices (None: unbounded)."""
    counts = []
    for device in devices:
        counts.append(settings.cpu_max_models if device == "cpu" else settings.gpu_max_models)
    known = [c for c in counts if c is not None]
    return min(known) if known and len(known) == len(counts) else None


"""Fair dispatch: a queue's jobs go to the broker a few at a time, in a fair order.

A broker serves a queue first in, first out, so one owner's burst of 1,000 jobs would hold back
everybody else's until it drains. So at most ``dispatch_window`` jobs of a queue wait on the broker
at once; a job submitted beyond that (or while others are held) is *held*: recorded as queued in the
job store, its message not yet sent. Each time a job of the queue starts (and, for a capped model,
ends), the worker that runs it releases the next held jobs, in this order:

1. **interactive first**: a higher ``priority`` goes first (the synchronous endpoints submit with
   :data:`INTERACTIVE`); its message also carries the broker priority;
2. **fair share over owners**: start-time fair queuing. A held job's tag is its owner's previous held
   tag plus ``1 / weight`` (``owner_weights``, default 1); an owner with none held starts at the tag
   of the job next in line. Lowest tag first (ties: oldest first): owners with jobs waiting are
   served in proportion to their weights, a newcomer's first job goes right after the next one in
   line, and an owner alone gets every turn.

``models.<name>.max_concurrency`` caps the jobs of a model that wait on the broker or run, across
the cluster: its jobs are always held and released only while fewer are out (the release takes a
lock row in the store, so two workers never pass the cap together).

Nothing central runs it: the submitter, each worker that starts or ends a job (in a thread of its
own, so the job does not wait for the broker: :func:`release_quietly`), and the reconciler (every
pass, for any queue still holding jobs) release. A release whose publish fails puts its jobs
back among the held ones; one lost after the record said released is found by the reconciler, like
any lost message. Fairness never moves a worker to another model: it orders the jobs of one queue,
and the model placement (modelq.models.placement) still decides which queues a worker reads.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from modelq.errors import InvalidInput
from modelq.models.affinity import MODEL_QUEUE_SEPARATOR

log = logging.getLogger(__name__)

#: The priority of a job a client waits on (the synchronous endpoints; ``"priority": "interactive"``).
INTERACTIVE = 9
#: The words a request may give as its priority.
PRIORITY_WORDS: dict[str, int | None] = {"interactive": INTERACTIVE, "batch": None}


def priority_value(priority: int | str | None) -> int | None:
    """A job's priority from what a request said: a number, ``"interactive"`` or ``"batch"``.

    Raises:
        InvalidInput: any other word.
    """
    if isinstance(priority, str):
        word = priority.strip().lower()
        if word in PRIORITY_WORDS:
            return PRIORITY_WORDS[word]
        if not word.isdigit():
            raise InvalidInput(
                f"priority must be a number from 0 to 9, 'interactive' or 'batch', got {priority!r}", field="priority"
            )
        return int(word)
    return priority


def weight_of(settings: Any, owner: str) -> float:
    return float(settings.owner_weights.get(owner, 1.0))


def cap_of(settings: Any, queue: str) -> tuple[int | None, str | None]:
    """(max_concurrency, model) for a model queue whose model is capped; (None, None) otherwise."""
    model = queue.partition(MODEL_QUEUE_SEPARATOR)[2]
    config = settings.models.get(model) if model else None
    cap = getattr(config, "max_concurrency", None)
    return (cap, model) if cap is not None else (None, None)


def release(app: Any, queue: str) -> int:
    """Send the next held jobs of ``queue`` to the broker while it has room; returns how many went."""
    from modelq.jobs.service import publish

    settings, store = app.modelq.settings, app.modelq.store
    cap, model = cap_of(settings, queue)
    released = store.release(queue, window=settings.dispatch_window, cap=cap, cap_model=model)
    for sent, job in enumerate(released):
        try:
            publish(
                app, job["task"], job["id"], job["input"], job["queue"], job["priority"], generation=job["republished"]
            )
        except Exception:
            # this job and every one released with it after it go back to the held ones: a job left
            # marked released with no message would keep its room in the window and never run
            for unsent in released[sent:]:
                store.hold_again(unsent["id"])
            log.warning(
                "could not publish held job %s to %s; it and %d more wait for the next release",
                job["id"],
                queue,
                len(released) - sent - 1,
                exc_info=True,
            )
            return sent
    return len(released)


def release_quietly(app: Any, queue: str, *, in_background: bool = False) -> None:
    """:func:`release` when it would send something, for the paths a failure must not break (a
    submission, a job starting or ending).

    One read first, no lock: nothing is held, or the window has no room, costs no more. Under a
    backlog, jobs are released in twos or more (once half the window is free, or at once when
    none of the queue's messages is left on the broker), which halves the releases a burst costs.
    ``in_background`` (a job starting or ending): the release itself runs in this process's release
    thread, so the job does not wait for the broker.
    """
    try:
        due = _due(app, queue)
    except Exception:
        log.warning("reading the held jobs of %s failed; the reconciler will release them", queue, exc_info=True)
        return
    if due:
        (_releaser.request if in_background else _release_logged)(app, queue)


def _release_logged(app: Any, queue: str) -> None:
    try:
        release(app, queue)
    except Exception:
        log.warning("releasing held jobs of %s failed; the reconciler will try again", queue, exc_info=True)


def _due(app: Any, queue: str) -> bool:
    """Whether a release of ``queue`` would send something now (one read, no lock)."""
    settings = app.modelq.settings
    waiting, held = app.modelq.store.window_state(queue)
    capped = cap_of(settings, queue)[0] is not None
    return held and (
        capped or waiting == 0 or settings.dispatch_window - waiting >= max(settings.dispatch_window // 2, 1)
    )


class _Releaser:
    """A daemon thread per process that runs :func:`release` off the caller's path (the caller read
    that a release is due).

    A worker asks for a release as each job starts; publishing the next job's message there would
    add a broker round trip to every job (the largest part of a short job's cost in the queue).
    Requests for the same queue made while a release runs are served by one more release. What is
    still pending when the process exits is left to the reconciler, like any release that failed.
    """

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)  # a forked pool process starts its own thread

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._pending: dict[tuple[int, str], tuple[Any, str]] = {}
        self._thread: threading.Thread | None = None

    def request(self, app: Any, queue: str) -> None:
        with self._lock:
            self._pending[(id(app), queue)] = (app, queue)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="modelq-release", daemon=True)
                self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            with self._lock:
                self._wake.clear()
                pending, self._pending = list(self._pending.values()), {}
            for app, queue in pending:
                _release_logged(app, queue)


_releaser = _Releaser()


def release_all(app: Any) -> int:
    """Release what every queue with held jobs has room for (the reconciler's safety net)."""
    return sum(release(app, queue) for queue in app.modelq.store.held_queues())

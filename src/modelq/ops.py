"""Operations on queues that Celery's control API does not cover directly: depth and purge of one queue."""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Exchange, Queue


def queue_depths(app: Celery, queues: list[str]) -> dict[str, int | None]:
    """Messages waiting in each queue (None where the broker would not say).

    A passive declare works on RabbitMQ and on kombu's Redis transport alike
    (which sums every priority level of the queue).
    """
    depths: dict[str, int | None] = {}
    on_broker = app.modelq.settings.broker_queue
    with app.connection_for_read() as conn:
        channel = conn.default_channel
        for name in queues:
            try:
                depths[name] = int(channel.queue_declare(queue=on_broker(name), passive=True).message_count)
            except Exception:  # the queue was never declared: nothing has been sent to it
                depths[name] = 0
                channel = conn.channel()  # AMQP closes a channel after a failed passive declare
    return depths


def readers_of(settings: Any, active_queues: dict[str, list[dict[str, Any]]] | None) -> dict[str, list[str]]:
    """The live workers reading each queue (logical name), from ``inspect().active_queues()``."""
    readers: dict[str, list[str]] = {}
    for worker, queues in sorted((active_queues or {}).items()):
        for queue in queues:
            readers.setdefault(settings.logical_queue(queue["name"]), []).append(worker)
    return readers


def queue_rows(app: Celery, readers: dict[str, list[str]]) -> list[dict[str, Any]]:
    """Every configured queue and every queue with waiting jobs, per-model queues included.

    Each row: ``name``; ``depth``, the messages on the broker (None where it would not say);
    ``queued_jobs``, the jobs the store holds as queued; ``consumers``, the live workers reading
    it (``readers``, by logical queue name); ``stranded``, jobs waiting with nobody to serve them
    (the reconciler's and the placement's reports).
    """
    from modelq.reconciler import stranded_counts

    runtime = app.modelq
    backlog = runtime.store.backlog("")
    names = list(dict.fromkeys([*runtime.settings.queues, *sorted(readers), *sorted(backlog)]))
    depths = queue_depths(app, names)
    stranded = stranded_counts(runtime.store, runtime.settings)
    return [
        {
            "name": name,
            "depth": depths.get(name),
            "queued_jobs": backlog.get(name, (0, None))[0],
            "consumers": readers.get(name, []),
            "stranded": stranded.get(name, 0),
        }
        for name in names
    ]


def declare_queue(app: Celery, queue: str) -> None:
    """Declare ``queue`` (the logical name) and its binding on the broker now, as Celery would.

    Celery declares a queue once per connection and remembers it; after the broker lost its data
    (on Redis, the bindings too), only an explicit declare brings them back.
    """
    entity = app.amqp.queues[app.modelq.settings.broker_queue(queue)]  # created like any missing queue
    with app.connection_for_write() as conn:
        entity(conn.default_channel).declare()


def _dead_letter_queue(app: Celery) -> Queue:
    name = app.modelq.settings.broker_queue(app.modelq.settings.dead_letter_queue)
    return Queue(name, Exchange(name, type="direct"), routing_key=name)


def publish_dead_letter(app: Celery, letter: dict[str, Any]) -> None:
    """Park a job that can never finish: its id, task, input and why (JSON, never run by a worker)."""
    queue = _dead_letter_queue(app)
    with app.producer_or_acquire() as producer:
        producer.publish(
            letter,
            exchange=queue.exchange,
            routing_key=queue.routing_key,
            declare=[queue],
            serializer="json",
            retry=True,
        )


def dead_letters(app: Celery, limit: int = 1000) -> list[dict[str, Any]]:
    """The letters in the dead-letter queue, oldest first, left in place."""
    queue = _dead_letter_queue(app)
    letters: list[dict[str, Any]] = []
    with app.connection_for_read() as conn:
        bound = queue(conn.default_channel)
        bound.declare()
        messages = []
        while len(messages) < limit and (message := bound.get(no_ack=False, accept=["json"])) is not None:
            messages.append(message)
            letters.append(message.payload)
        for message in messages:
            message.requeue()
    return letters


def purge_queue(app: Celery, queue: str) -> tuple[int, int]:
    """Empty one queue and mark its queued jobs cancelled.

    Returns:
        (messages removed, job records cancelled)
    """
    with app.connection_for_write() as conn:
        try:
            removed = int(conn.default_channel.queue_purge(app.modelq.settings.broker_queue(queue)) or 0)
        except Exception:  # never declared: nothing to purge
            removed = 0
    cancelled = app.modelq.store.cancel_queued(queue, f"purged from queue {queue!r}")
    return removed, cancelled

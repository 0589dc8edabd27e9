"""Operations on queues that Celery's control API does not cover directly: depth and purge of one queue."""

from __future__ import annotations

from celery import Celery


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

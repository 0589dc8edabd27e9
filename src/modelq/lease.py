"""Leases on Redis: a job that outlives the visibility timeout is never handed to a second worker.

kombu's Redis transport keeps each unacknowledged message in ``unacked_index`` with
the time it was delivered; any worker puts a message back on its queue once that time
is older than the visibility timeout, because its worker may be gone. A long job's
worker is not gone, so a thread in each worker renews the time of every message it
holds (running or reserved) at a third of the timeout. A worker that really died stops
renewing, and its jobs come back one visibility timeout later.

RabbitMQ needs none of this: it redelivers only when the consumer's connection closes.

A message can still come back while its job runs: a broker outage longer than the lease's slack
(the lease lapses, and the first worker to reconnect puts the message back), or a RabbitMQ
connection that closed under a running job. So the process running a job also beats a heartbeat
in the job store (:class:`RunHeartbeat`), which an outage of the broker does not stop. A
redelivered message restarts a running job only when that heartbeat went quiet (its process
died); while it beats, the message is deferred, and checked again later (modelq.celery_app).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import timedelta
from typing import Any

log = logging.getLogger(__name__)

#: kombu's default keys (the Redis transport's ``unacked_index_key`` and ``unacked_key`` options).
UNACKED_INDEX = "unacked_index"
UNACKED = "unacked"


def held_delivery_tags() -> list[str]:
    """Delivery tags of the messages this worker holds: running and reserved jobs."""
    from celery.worker import state

    return [tag for request in [*state.active_requests, *state.reserved_requests] if (tag := delivery_tag(request))]


def delivery_tag(request: Any) -> str | None:
    """The delivery tag of a worker's request (a Celery ``Request``), if it has one."""
    tag = (getattr(request, "delivery_info", None) or {}).get("delivery_tag") or getattr(
        getattr(request, "message", None), "delivery_tag", None
    )
    return str(tag) if tag else None


def renew(client: Any, tags: list[str], now: float | None = None) -> int:
    """Move the delivery time of ``tags`` to now (only tags still unacknowledged: ZADD XX)."""
    if not tags:
        return 0
    now = time.time() if now is None else now
    return int(client.zadd(UNACKED_INDEX, {tag: now for tag in tags}, xx=True, ch=True) or 0)


def settle(client: Any, tag: str) -> None:
    """Forget one unacknowledged message, as kombu's ack does (ZREM and HDEL), on any connection."""
    client.pipeline().zrem(UNACKED_INDEX, tag).hdel(UNACKED, tag).execute()


def settle_elsewhere(app: Any, tag: str) -> bool:
    """Acknowledge ``tag`` on a fresh connection (its own connection was lost). Returns whether it did.

    When it cannot, the message stays unacknowledged, unrenewed, and comes back one visibility
    timeout later; its job's record is finished by then, so that delivery does not run it again.
    """
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
            settle(conn.default_channel.client, tag)
        return True
    except Exception:  # the broker is still away
        log.warning(
            "could not acknowledge message %s after a lost connection; it comes back after the "
            "visibility timeout and is skipped then",
            tag,
            exc_info=True,
        )
        return False


class LeaseRenewer:
    """A daemon thread that renews this worker's messages every ``visibility_timeout / 3`` seconds."""

    def __init__(self, app: Any, visibility_timeout: float) -> None:
        self.app = app
        self.interval = max(visibility_timeout / 3.0, 0.5)
        self._stop = threading.Event()

    def run(self) -> None:
        conn = None
        while not self._stop.wait(self.interval):
            try:
                if conn is None:
                    conn = self.app.connection_for_write()
                    conn.ensure_connection(max_retries=1)
                renew(conn.default_channel.client, held_delivery_tags())
            except Exception:  # the broker blinked: reconnect next round
                log.debug("lease renewal failed", exc_info=True)
                if conn is not None:
                    conn.release()
                conn = None

    def start(self) -> None:
        threading.Thread(target=self.run, name="modelq-lease", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()


class RunHeartbeat:
    """The jobs this process runs, and a daemon thread that beats their heartbeat in the job store
    every ``interval`` seconds. One per process (a forked child starts its own thread)."""

    def __init__(self) -> None:
        self._jobs: set[str] = set()
        self._lock = threading.Lock()
        self._pid: int | None = None

    def hold(self, store: Any, job_id: str, interval: float) -> None:
        with self._lock:
            self._jobs.add(job_id)
            if self._pid != os.getpid():
                self._pid = os.getpid()
                threading.Thread(target=self._run, args=(store, interval), name="modelq-heartbeat", daemon=True).start()

    def release(self, job_id: str) -> None:
        with self._lock:
            self._jobs.discard(job_id)

    def _run(self, store: Any, interval: float) -> None:
        pid = os.getpid()
        while os.getpid() == pid:
            time.sleep(interval)
            with self._lock:
                held = sorted(self._jobs)
            try:
                store.beat(held)
            except Exception:  # the database blinked: the next beat is soon enough
                log.debug("run heartbeat failed", exc_info=True)


#: This process's running jobs (see :class:`RunHeartbeat`).
heartbeats = RunHeartbeat()


def quiet_for(interval: float) -> timedelta:
    """How long a run's heartbeat is silent before its process counts as dead: three missed beats."""
    return timedelta(seconds=3 * interval)

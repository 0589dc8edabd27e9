"""The reconciler: every accepted job ends, whatever the broker lost.

The job store is the source of truth; the broker only carries each job to a worker. A message
can be lost: a worker killed between Redis handing it a message (``BRPOP``) and kombu recording
it as unacknowledged; a Redis without persistence that restarted, or was restored from an older
snapshot, or failed over to a replica that lagged; a queue purged or deleted behind modelq's
back. The job's record then says ``queued`` forever. Or a message waits in a queue that no live
worker reads, and nobody is told.

Each worker runs a :class:`Reconciler` thread; one of them at a time acts (the lease
``reconciler`` in the job store: when its holder dies, another takes it within
:data:`LEASE_SECONDS`). Every ``reconcile_interval`` seconds (5) the holder:

1. **Republishes lost jobs.** It counts: a queue's messages belong to its queued jobs that no
   live worker holds (running, reserved or scheduled, as ``inspect`` tells). When the jobs queued
   for longer than ``reconcile_grace`` outnumber the messages left for them, the difference is
   lost (see :meth:`Reconciler.lost`), and that many are published again with the same ids.
   The record counts each republish (``republished``), and the message carries that count, its
   generation: a message starts its job only if it is of the job's current generation, and a
   republished one only from ``queued`` (the store's conditional transition), so a message thought
   lost that turns up, or comes back redelivered while the new copy runs, never makes a second run.
   A pass in which a live worker did not answer (a broker that just restarted) republishes nothing:
   what that worker holds is unknown.
   On Redis, a job that runs on no live worker (two passes in a row) and whose run's heartbeat went
   quiet (its process died) is queued again and published the same way: when its message is among
   the unacknowledged ones (its worker was killed: kombu would put the message back only after the
   visibility timeout, an hour by default), and that message is forgotten; when it is not (a broker
   that lost its data while the job's worker died), once its queue holds no message (one put back
   would restart it).
   On Redis, a queued job whose message kombu holds as delivered and unacknowledged while no live
   worker holds the job (two passes in a row) is published again too, and that message forgotten.
   A worker drops the jobs it had reserved when it loses its connection (they cannot be
   acknowledged on a new one), and kombu puts them back only if the broker answers then; when the
   broker itself went away and came back from its append-only file, they would wait in the
   unacknowledged hash for the visibility timeout (an hour by default).
2. **Reports stranded jobs.** A queue whose jobs have waited longer than the grace while no live
   worker reads it is logged (naming the queue, and the workers that read its base queue and so
   could serve it) and counted in ``modelq_stranded_jobs{queue}``. Each queue with waiting jobs,
   its message count and its readers are written to the store for ``modelq status``, ``/metrics``
   and the cluster page.

What each broker can tell it: Redis and RabbitMQ both give each queue's message count (a passive
declare; Redis sums every priority level; RabbitMQ needs no management plugin); neither is asked
which jobs its messages carry, so one rule serves both. On Redis a message a worker took and did
not acknowledge sits in kombu's unacknowledged hash and comes back by itself after the
visibility timeout; those jobs count as held, unless no live worker holds them (see 1.). Workers
say what they hold and read through Celery's control broadcast (``inspect``), asked only when some
job is past the grace.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from modelq.jobs import dispatch
from modelq.lease import quiet_for
from modelq.models.affinity import MODEL_QUEUE_SEPARATOR
from modelq.ops import readers_of

log = logging.getLogger(__name__)

LEASE = "reconciler"
#: A holder that stops renewing loses the lease after this long.
LEASE_SECONDS = 30.0
#: Seconds to wait for workers' replies to ``inspect``.
INSPECT_TIMEOUT = 1.0
#: Jobs checked per pass (the oldest first).
BATCH = 1000


class Reconciler:
    """One process's reconciler thread (acts only while it holds the cluster's lease)."""

    def __init__(self, app: Any, holder: str) -> None:
        self.app = app
        self.holder = holder
        self.settings = app.modelq.settings
        self.store = app.modelq.store
        self._stop = threading.Event()
        self._warned: dict[str, float] = {}
        self._declared: set[str] = set()
        self._unheld_before: set[str] = set()
        self._abandoned_before: set[str] = set()

    # One pass ---------------------------------------------------------------------------

    def reconcile(self) -> dict[str, Any]:
        """One pass (the caller holds the lease). Returns what it found and did."""
        self._declared = set()  # declare each queue again on its first republish of the pass
        try:  # held jobs whose release nobody made (their window emptied while a release failed)
            dispatch.release_all(self.app)
        except Exception:
            log.warning("reconciler: releasing held jobs failed", exc_info=True)
        grace = timedelta(seconds=self.settings.reconcile_grace)
        waiting = self.store.backlog("")  # every queue with queued jobs: (count, oldest)
        started = datetime.now(timezone.utc)
        # A run that beats is held, whatever inspect says (a solo worker busy with it does not answer,
        # one that lost touch with the broker for a while neither): only quiet ones can be orphans.
        quiet_since = started - quiet_for(self.settings.run_heartbeat_interval)
        running = (
            self.store.running_before(started - grace, quiet_since=quiet_since, limit=BATCH) if self.on_redis() else []
        )
        depths = self.depths(sorted(set(waiting) | {job["queue"] for job in running}))
        read_at = datetime.now(timezone.utc)  # the depths are at most this recent
        jobs = self.store.queued_until(read_at, limit=BATCH)
        overdue = [job for job in jobs if read_at - job["created_at"] >= grace]
        held: set[str] = set()
        unacked: dict[str, tuple[str, int]] = {}
        readers: dict[str, list[str]] = {}
        if overdue or running:
            held, unacked, readers, complete = self.workers_view()
            if not complete:  # a worker did not answer (a broker that just restarted): what it holds is unknown
                log.info("reconciler: not every live worker answered; republishing nothing this pass")
                overdue, running = [], []
        republished = []
        for job in self.orphans(running, held):
            if job["id"] in unacked:  # its message goes with it: it would come back after the visibility timeout
                if self.requeue(job):
                    republished.append(job["id"])
                    self.forget_unacked(unacked[job["id"]][0])
            # Else only from a queue that holds no message: a message put back (a dead worker's, after
            # the visibility timeout) may be waiting there, and would restart the job beside a republished one.
            elif depths.get(job["queue"]) == 0 and self.requeue(job):
                republished.append(job["id"])
        for job in self.abandoned(overdue, held, unacked):
            if self.republish(job["id"], job["queue"]):
                republished.append(job["id"])
                self.forget_unacked(unacked[job["id"]][0])
        held |= set(unacked)  # the rest come back by themselves (or their job already runs)
        for queue, lost in sorted(self.lost(jobs, overdue, held, depths, read_at - grace).items()):
            republished += [job["id"] for job in lost if self.republish(job["id"], queue)]
        reports, stranded = [], {}
        for queue, (count, oldest) in sorted(waiting.items()):
            reading = readers.get(queue, [])
            late = oldest is not None and read_at - oldest >= grace
            base = queue.split(MODEL_QUEUE_SEPARATOR, 1)[0]
            # Nobody reads it, nor its base queue (a model queue that a worker of its base queue leaves
            # unread is the placement's choice; one left unread beside an idle worker, the placement reports).
            if late and overdue and not reading and not readers.get(base) and depths.get(queue):
                stranded[queue] = count
                self.warn_stranded(queue, count, readers)
            reports.append(
                {
                    "queue": queue,
                    "waiting": count,
                    "messages": depths.get(queue),
                    "readers": ",".join(reading),
                    "stranded": stranded.get(queue, 0),
                }
            )
        self.store.report_queues(reports)
        return {"republished": republished, "stranded": stranded, "checked": len(overdue)}

    def orphans(self, running: list[dict[str, Any]], held: set[str]) -> list[dict[str, Any]]:
        """Running jobs that no live worker held in this pass nor in the one before, their heartbeat
        quiet (Redis): their worker died. Either the broker lost the message that would have brought
        them back, or it sits unacknowledged and would come back only after the visibility timeout
        (an hour by default)."""
        unheld = {job["id"] for job in running if job["id"] not in held}
        orphaned = [job for job in running if job["id"] in unheld and job["id"] in self._unheld_before]
        self._unheld_before = unheld
        return orphaned

    def abandoned(
        self, overdue: list[dict[str, Any]], held: set[str], unacked: dict[str, tuple[str, int]]
    ) -> list[dict[str, Any]]:
        """Overdue queued jobs whose message of the current generation is unacknowledged (Redis) while
        no live worker held them in this pass nor in the one before: the worker that took the message
        dropped it with a lost connection, and nobody will run it before the visibility timeout."""
        candidates = [
            job
            for job in overdue
            if job["id"] in unacked and job["id"] not in held and unacked[job["id"]][1] == job["republished"]
        ]
        found = [job for job in candidates if job["id"] in self._abandoned_before]
        self._abandoned_before = {job["id"] for job in candidates}
        return found

    def forget_unacked(self, tag: str) -> None:
        """Drop an abandoned message from kombu's unacknowledged ones (its job was published again)."""
        from modelq.lease import settle

        try:
            with self.app.connection_for_write() as conn:
                settle(conn.default_channel.client, tag)
        except Exception:  # it comes back after the visibility timeout, of an old generation: dropped then
            log.debug("reconciler: could not forget unacknowledged message %s", tag, exc_info=True)

    def requeue(self, job: dict[str, Any]) -> bool:
        """Queue an orphaned running job again and publish it; True when it was still so."""
        if not self.store.requeue_orphan(job["id"], job["attempts"]):
            return False
        log.warning(
            "job %s was running on %s, which no longer holds it: queuing it again",
            job["id"],
            job["worker"],
        )
        return self.republish(job["id"], job["queue"])

    def on_redis(self) -> bool:
        from modelq.broker import is_redis_url

        return is_redis_url(self.app.conf.broker_url)

    @staticmethod
    def lost(
        jobs: list[dict[str, Any]],
        overdue: list[dict[str, Any]],
        held: set[str],
        depths: dict[str, int | None],
        cutoff: datetime,
    ) -> dict[str, list[dict[str, Any]]]:
        """Per queue, the overdue jobs whose messages are gone, by counting (works on every broker).

        A queue's messages belong to its queued jobs that no worker holds. The newer ones (created
        after ``cutoff``, up to when the depth was read) are taken to be there (a queue is served
        oldest first); the overdue ones share what is left. Those beyond it are lost: the ones
        republished fewest times, then the oldest (messages are taken oldest first, so a message
        lost on its way to a worker is the oldest one).
        """
        found: dict[str, list[dict[str, Any]]] = {}
        for queue in {job["queue"] for job in overdue}:
            messages = depths.get(queue)
            if messages is None:  # the broker would not say: do nothing
                continue
            newer = sum(
                1 for job in jobs if job["queue"] == queue and job["created_at"] > cutoff and job["id"] not in held
            )
            waiting = [job for job in overdue if job["queue"] == queue and job["id"] not in held]
            missing = len(waiting) - max(messages - newer, 0)
            if missing > 0:
                found[queue] = sorted(waiting, key=lambda job: (job["republished"], job["created_at"]))[:missing]
        return found

    def depths(self, queues: list[str]) -> dict[str, int | None]:
        """Messages waiting on the broker per queue (None where it would not say)."""
        from modelq.ops import queue_depths

        try:
            return queue_depths(self.app, queues)
        except Exception:  # the broker is down: nothing can be told, nothing is republished
            log.debug("reconciler: no queue depths", exc_info=True)
            return dict.fromkeys(queues)

    def workers_view(self) -> tuple[set[str], dict[str, tuple[str, int]], dict[str, list[str]], bool]:
        """Job ids live workers hold; on Redis, the unacknowledged messages (see :meth:`unacked`); the
        readers of each queue; and whether the view is complete: every worker that answered one
        question answered them all, and every worker that reported its placement lately answered.

        A model queue (``gpu.model.x``) is read by the workers reading it; the workers that read
        its base queue (``gpu``) could serve it.
        """
        from modelq.models.affinity import STALE_SECONDS

        # The replies are read over a connection of its own, closed here: one from the app's pool would go
        # back to it with its read of the replies still pending, and a pool process forked later (the
        # reconciler runs in a prefork pool's parent) would block for good closing that read on start.
        # Unnamed: the consumer's name marks the read the affinity controller wakes (modelq.models.affinity).
        with self.app.connection_for_read(transport_options={"client_name": None}) as conn:
            inspect = self.app.control.inspect(timeout=INSPECT_TIMEOUT, connection=conn)
            replies = [inspect.active(), inspect.reserved(), inspect.scheduled(), inspect.active_queues()]
        answered = [set(reply or {}) for reply in replies]
        recent = datetime.now(timezone.utc) - timedelta(seconds=STALE_SECONDS)
        reporting = {row["worker"] for row in self.store.consumers(recent)}
        complete = all(names == answered[0] for names in answered) and reporting <= answered[0]
        held: set[str] = set()
        for reply in replies[:3]:
            for requests in (reply or {}).values():
                for request in requests:
                    info = request.get("request", request)  # scheduled() wraps each request
                    if info.get("id"):
                        held.add(info["id"])
        return held, self.unacked(), readers_of(self.settings, replies[3]), complete

    def unacked(self) -> dict[str, tuple[str, int]]:
        """Per job id, the delivery tag and generation of its message that kombu's Redis transport holds
        as delivered and not acknowledged (the newest generation, where there are several)."""
        if not self.on_redis():
            return {}
        from modelq.celery_app import REPUBLISHED_HEADER
        from modelq.lease import UNACKED

        found: dict[str, tuple[str, int]] = {}
        try:
            with self.app.connection_for_read() as conn:
                client = conn.default_channel.client
                for tag, raw in client.hgetall(UNACKED).items():
                    headers = json.loads(raw)[0].get("headers") or {}
                    job_id, generation = headers.get("id"), int(headers.get(REPUBLISHED_HEADER) or 0)
                    if job_id and generation >= found.get(job_id, ("", -1))[1]:
                        found[job_id] = (tag.decode() if isinstance(tag, bytes) else str(tag), generation)
        except Exception:
            log.debug("reconciler: could not read the unacknowledged messages", exc_info=True)
        return found

    def republish(self, job_id: str, queue: str) -> bool:
        """Publish a queued job's message again (same id); True when it was still queued.

        The queue is declared first, whatever this process declared before: a broker that lost its
        data lost the queue's bindings too (kombu's Redis transport keeps them in Redis), and a
        message published without them is dropped.
        """
        from modelq.jobs.service import publish
        from modelq.ops import declare_queue

        job = self.store.count_republished(job_id)
        if job is None:
            return False
        if queue not in self._declared:
            declare_queue(self.app, queue)
            self._declared.add(queue)
        publish(
            self.app, job["task"], job_id, job["input"] or {}, queue, job["priority"], generation=job["republished"]
        )
        log.warning(
            "job %s (%s) in %s: its message is on no queue and no worker holds it; published it again",
            job_id,
            job["task"],
            queue,
        )
        return True

    def warn_stranded(self, queue: str, count: int, readers: dict[str, list[str]]) -> None:
        if time.monotonic() - self._warned.get(queue, -60.0) < 60.0:
            return
        self._warned[queue] = time.monotonic()
        base = queue.split(MODEL_QUEUE_SEPARATOR, 1)[0]
        workers = sorted({w for names in readers.values() for w in names})
        log.warning(
            "%d job(s) wait in queue %s, which no live worker reads (live workers: %s); start one that "
            "serves it: modelq worker -Q %s",
            count,
            queue,
            ", ".join(workers) or "none",
            base,
        )

    # The thread -------------------------------------------------------------------------

    def run(self) -> None:
        while not self._stop.wait(self.settings.reconcile_interval):
            try:
                if self.store.take_lease(LEASE, self.holder, LEASE_SECONDS):
                    self.reconcile()
            except Exception:  # the database or broker blinked: next pass
                log.warning("reconciler pass failed", exc_info=True)
        try:
            self.store.drop_lease(LEASE, self.holder)
        except Exception:
            log.debug("could not drop the reconciler lease", exc_info=True)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="modelq-reconciler", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()


def stranded_counts(store: Any, settings: Any) -> dict[str, int]:
    """Jobs stranded per queue, from the reconciler's last pass and every worker's placement report."""
    from modelq.models.affinity import STALE_SECONDS

    now = datetime.now(timezone.utc)
    counts: dict[str, int] = {}
    fresh = now - timedelta(seconds=max(3 * settings.reconcile_interval, LEASE_SECONDS))
    for row in [*store.queue_reports(fresh), *store.consumers(now - timedelta(seconds=STALE_SECONDS))]:
        if row["queue"]:
            counts[row["queue"]] = max(counts.get(row["queue"], 0), row["stranded"])
    return counts

"""Model affinity: each worker reads the model queues its placement gives it, and nothing else.

Jobs for a model go to a queue of their own, ``<queue>.model.<name>`` (see :func:`model_queue`).
A controller thread in each worker, every :data:`TICK_SECONDS` (:data:`IDLE_TICK_SECONDS` while it
runs no job, so an idle worker takes on newly queued work sooner):

1. reads a snapshot from the job store: the backlog per model queue, typical job and load times,
   and what every live worker reads, has chosen and holds (:class:`modelq.jobs.records.ModelConsumer`);
2. computes :func:`modelq.models.placement.plan` for itself (the rules and the starvation bound
   are written there); a plan that takes on a model is made again under a lock in the store and
   published before the lock is let go, so workers that tick together take it on one at a time
   (:meth:`AffinityController.take_on`);
3. steers its own consumer in this process (``Consumer.add_task_queue`` / ``cancel_task_queue``
   through ``call_soon``, on the consumer's own loop; on Redis it then cuts the consumer's blocked
   read short, so a queue just added is read at once: :meth:`AffinityController._wake`), and
   reconciles against the queues the consumer really reads, so a change that did not take (or one
   made by someone else, such as ``celery control add_consumer``) is put right on the next tick;
4. takes any queue it can serve whose jobs wait while it sits idle (stranded: see :meth:`stranded`);
5. publishes what it reads, has chosen and holds when that changed, and every few seconds.

Nothing central decides. A worker whose snapshot is stale or missing (the store is down, peers
stopped reporting) falls back to its own view: itself alone, which is the one-worker policy.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone
from typing import Any

from modelq.models.placement import Demand, Peer, Plan, plan

log = logging.getLogger(__name__)

MODEL_QUEUE_SEPARATOR = ".model."
TICK_SECONDS = 0.1
#: The tick of a worker with no job in hand: a tick costs about 2 ms of CPU, and an idle worker has it to spare.
IDLE_TICK_SECONDS = 0.05
#: Publish at least this often (a heartbeat), even when nothing changed.
HEARTBEAT_SECONDS = 2.0
#: A worker not seen for this long is gone: its rows are left out of every snapshot.
STALE_SECONDS = 10.0
#: Job and load times are re-read this often.
COSTS_SECONDS = 2.0
#: How far back the newest arrival per model queue is looked for (longer than any load).
ARRIVALS_SECONDS = 300.0
#: A consumer change not visible after this long is made again.
RETRY_SECONDS = 1.0
#: Typical job seconds before any job of a model finished.
DEFAULT_JOB_SECONDS = 1.0
#: Seconds a load is taken to cost before any worker measured a load of any model (on the safe side:
#: a guess too low would let a worker switch models too soon). Once some model's load was measured,
#: a model not yet loaded counts as the longest load measured: a guess above the real loads would
#: hold a worker on its model past the starvation bound (see modelq.models.placement).
DEFAULT_LOAD_SECONDS = 5.0
#: Jobs that wait this long while a worker that can serve them sits idle as long are stranded.
STRANDED_SECONDS = 10.0


def model_queue(queue: str, model: str) -> str:
    return f"{queue}{MODEL_QUEUE_SEPARATOR}{model}"


class AffinityController:
    """Steers one worker's consumer between model queues (runs in the worker's main process).

    Args:
        app: the Celery app (``app.modelq`` is the runtime: settings, store, residency).
        consumer: the worker's Celery consumer, whose task consumer it steers.
        hostname: the worker's name, as the snapshot knows it.
        base_queues: the logical queues it serves whose jobs route by model.
        capacity: models it may hold at once (None: no limit).
        in_process: solo and threads pools run jobs in this process: read its residency directly.
    """

    def __init__(
        self,
        app: Any,
        consumer: Any,
        hostname: str,
        base_queues: list[str],
        capacity: int | None,
        *,
        in_process: bool = False,
    ) -> None:
        self.app = app
        self.consumer = consumer
        self.in_process = in_process
        self.hostname = hostname
        self.base_queues = base_queues
        self.capacity = capacity
        self.settings = app.modelq.settings
        self.store = app.modelq.store
        self.chosen: dict[str, datetime] = {}
        self._published: tuple | None = None
        self._published_at = 0.0
        self._costs_at = -COSTS_SECONDS
        self._job_seconds: dict[str, float] = {}
        self._load_seconds: dict[str, float] = {}
        self._arrivals: dict[str, datetime] = {}
        self._arrived: dict[str, int] = {}
        self._served: dict[str, datetime] = {}
        self._arrivals_read_at = datetime.now(timezone.utc)
        self._asked: dict[tuple[str, str], float] = {}
        self._idle_since: float | None = None
        self._warned: dict[str, float] = {}
        self._read_before: set[str] = set()
        self._resubscribed: dict[str, float] = {}
        #: The Redis client id of the consumer's blocking read, once found (see :meth:`_wake`).
        self._read_id: int | None = None
        self._stop = threading.Event()

    # The snapshot ------------------------------------------------------------------

    def known_queues(self) -> set[str]:
        """Queues of the models that tasks on this worker's queues use by default, or those it is pinned to."""
        from modelq.tasks import registered_tasks

        pinned = self.settings.worker_models
        names: set[str] = set(pinned or ())
        if not pinned:
            for spec in registered_tasks().values():
                base = self.settings.queue_for(spec.name, spec.queue)
                if base in self.base_queues and spec.name in self.app.tasks:
                    names.update(spec.models)
        return {model_queue(base, name) for base in self.base_queues for name in names}

    def held_models(self) -> set[str]:
        """Models this worker holds, or is loading: a load in progress counts, so a switch sticks."""
        if self.in_process:
            return self.app.modelq.residency.held_or_loading()
        return {row["model"] for row in self.store.residency() if row["worker"] == self.hostname and row["resident"]}

    def in_hand(self) -> set[str]:
        """Model queues of the jobs this worker has received and not finished: it is about to hold their models."""
        from celery.worker.state import active_requests, reserved_requests

        keys = {(request.delivery_info or {}).get("routing_key") for request in {*active_requests, *reserved_requests}}
        return {self.settings.logical_queue(key) for key in keys if key and MODEL_QUEUE_SEPARATOR in key}

    def _refresh_costs(self) -> None:
        if time.monotonic() - self._costs_at < COSTS_SECONDS:
            return
        self._costs_at = time.monotonic()
        job_seconds: dict[str, float] = {}
        for base in self.base_queues:
            for queue, seconds in self.store.run_seconds(f"{base}{MODEL_QUEUE_SEPARATOR}").items():
                job_seconds[queue] = statistics.median(seconds)  # a median: a job that paid a load is an outlier
        loads: dict[str, list[float]] = {}
        for row in self.store.residency():
            if row["loads"]:
                loads.setdefault(row["model"], []).append(row["load_seconds"] / row["loads"])
        self._job_seconds = job_seconds
        self._load_seconds = {model: max(times) for model, times in loads.items()}
        read_at = datetime.now(timezone.utc)
        since = read_at - timedelta(seconds=ARRIVALS_SECONDS)
        # A model's recent demand: the jobs that arrived within one stint (k loads), the horizon of
        # the switching rules, so it follows a shift in demand as soon as a switch could.
        stint = self.settings.affinity_switch_factor * max(self._load_seconds.values(), default=DEFAULT_LOAD_SECONDS)
        counted_since = read_at - timedelta(seconds=stint)
        arrivals = {
            q: seen
            for base in self.base_queues
            for q, seen in self.store.arrivals(f"{base}{MODEL_QUEUE_SEPARATOR}", since, counted_since).items()
        }
        self._arrivals = {q: latest for q, (latest, _count) in arrivals.items()}
        self._arrived = {q: count for q, (_latest, count) in arrivals.items()}
        self._served = {
            q: at
            for base in self.base_queues
            for q, at in self.store.latest_starts(f"{base}{MODEL_QUEUE_SEPARATOR}", since).items()
        }
        self._arrivals_read_at = read_at

    def load_seconds(self) -> dict[str, float]:
        """Per model, the longest mean load time any worker measured (this one's own figures are fresh)."""
        measured = dict(self._load_seconds)
        if self.in_process:
            for own in self.app.modelq.residency.stats():
                if own.loads:
                    measured[own.name] = max(measured.get(own.name, 0.0), own.load_seconds / own.loads)
        return measured

    def demand(self) -> dict[str, Demand]:
        """Per model queue with jobs queued, or with a job arrived lately: backlog and costs."""
        self._refresh_costs()
        backlog: dict[str, tuple[int, datetime | None]] = {}
        for base in self.base_queues:
            backlog.update(self.store.backlog(f"{base}{MODEL_QUEUE_SEPARATOR}"))
        loads = self.load_seconds()
        unmeasured = max(loads.values(), default=DEFAULT_LOAD_SECONDS)
        # Arrivals are read every COSTS_SECONDS: what came since is unknown, so each one counts as if
        # it were that much newer. Otherwise a worker lingering one load time after its model's last
        # job would leave a model whose jobs keep coming whenever the snapshot is older than a load.
        unseen = datetime.now(timezone.utc) - self._arrivals_read_at
        demand = {}
        for queue in backlog.keys() | self._arrivals.keys():
            count, oldest = backlog.get(queue, (0, None))
            model = queue.partition(MODEL_QUEUE_SEPARATOR)[2]
            declared = self.settings.models.get(model)
            demand[queue] = Demand(
                queued=count,
                oldest=oldest,
                job_seconds=self._job_seconds.get(queue, DEFAULT_JOB_SECONDS),
                load_seconds=loads.get(model, unmeasured),
                last_arrival=self._arrivals[queue] + unseen if queue in self._arrivals else None,
                served_at=self._served.get(queue),
                arrived=self._arrived.get(queue, 0),
                cap=declared.max_concurrency if declared else None,
            )
        return demand

    def snapshot(self, now: datetime) -> list[dict[str, Any]]:
        """Every live worker's published consumer rows (none when the store cannot say)."""
        try:
            return self.store.consumers(now - timedelta(seconds=STALE_SECONDS))
        except Exception:  # no snapshot: decide alone, as one worker would
            log.debug("placement: no snapshot of the other workers", exc_info=True)
            return []

    @staticmethod
    def peers(me: Peer, rows: list[dict[str, Any]]) -> dict[str, Peer]:
        """Every live worker in ``rows``, with this worker's own (``me``) in place of its rows."""
        peers: dict[str, Peer] = {}
        for row in rows:
            if row["worker"] == me.name:
                continue
            peer = peers.setdefault(row["worker"], Peer(name=row["worker"]))
            if not row["queue"]:
                peer.slots = row["slots"]
                if row["serves"]:  # pinned: only the queues of its rows marked serves
                    peer.serves = peer.serves or set()
                continue
            if row["serves"]:
                peer.serves = (peer.serves or set()) | {row["queue"]}
            if row["chosen"]:
                peer.chosen[row["queue"]] = row["since"]
            if row["held"]:
                peer.holds.add(row["queue"])
        peers[me.name] = me
        return peers

    # One tick ----------------------------------------------------------------------

    def tick(self) -> None:
        now = datetime.now(timezone.utc)
        demand = self.demand()
        held = {model_queue(base, name) for name in self.held_models() for base in self.base_queues} | self.in_hand()
        # Any model a job on this worker's queues names, or one it holds, unless it is pinned to some.
        known = self.known_queues() | (set() if self.settings.worker_models else set(demand) | held)
        me = Peer(name=self.hostname, chosen=dict(self.chosen), holds=held, slots=self.capacity, serves=known)

        def decide(rows: list[dict[str, Any]]) -> tuple[Plan, dict[str, Peer]]:
            peers = self.peers(me, rows)
            return plan(
                self.hostname,
                peers,
                demand,
                known=known,
                switch_factor=self.settings.affinity_switch_factor,
                max_wait=self.settings.affinity_max_wait,
                now=now,
            ), peers

        decided, peers = decide(self.snapshot(now))
        if decided.chosen - set(self.chosen):
            decided, peers = self.take_on(decide, held, known, now) or (decided, peers)
        self.choose(decided, now)
        served = {q for name, peer in peers.items() if name != self.hostname for q in peer.chosen}
        stranded = self.stranded(known - served, demand, now)
        for queue in stranded:  # heal: this worker takes them, whatever the plan assumed
            self.chosen.setdefault(queue, now)
        reading = decided.reading | set(stranded)
        self.steer(reading)
        self.publish(reading, held, stranded, known)

    def take_on(
        self,
        decide: Callable[[list[dict[str, Any]]], tuple[Plan, dict[str, Peer]]],
        held: set[str],
        known: set[str],
        now: datetime,
    ) -> tuple[Plan, dict[str, Peer]] | None:
        """Decide again to take on a model, one worker at a time, and publish the choice before the next
        worker decides: idle workers that tick together would otherwise all see the model short of a
        server and all load it. None when the store cannot do it (the first decision stands)."""
        settled: tuple[Plan, dict[str, Peer]] | None = None

        def claim(rows: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
            nonlocal settled
            settled = decide(rows)
            decided = settled[0]
            if not decided.chosen - set(self.chosen):
                return None  # another worker took it on meanwhile
            self.choose(decided, now)
            self._published = self._state(decided.reading, held, {}, known)
            self._published_at = time.monotonic()
            return self._rows(decided.reading, held, {}, known)

        try:
            self.store.settle_consumers(self.hostname, now - timedelta(seconds=STALE_SECONDS), claim)
        except Exception:
            log.debug("placement: could not settle with the other workers", exc_info=True)
            return None
        return settled

    def choose(self, decided: Plan, now: datetime) -> None:
        """Commit to the plan's models (keeping when each was first chosen)."""
        if decided.chosen != set(self.chosen):
            log.info(
                "placement: %s now serves %s (was %s)",
                self.hostname,
                ", ".join(sorted(decided.chosen)) or "nothing",
                ", ".join(sorted(self.chosen)) or "nothing",
            )
        self.chosen = {q: self.chosen.get(q, now) for q in decided.chosen}

    def reading(self) -> set[str] | None:
        """The model queues the consumer really reads (None while it has no task consumer)."""
        task_consumer = getattr(self.consumer, "task_consumer", None)
        if task_consumer is None:
            return None
        names = {q.name for q in list(task_consumer.queues)}
        return {self.settings.logical_queue(n) for n in names if MODEL_QUEUE_SEPARATOR in n}

    def steer(self, desired: set[str]) -> None:
        """Ask the consumer's loop for the changes between what it reads and ``desired``."""
        actual = self.reading()
        if actual is None:
            return
        now = time.monotonic()
        pending = {("add", q) for q in desired - actual} | {("cancel", q) for q in actual - desired}
        self._asked = {key: at for key, at in self._asked.items() if key in pending}
        added = False
        for queue in sorted(desired - actual):
            if now - self._asked.get(("add", queue), -RETRY_SECONDS) >= RETRY_SECONDS:
                self._asked[("add", queue)] = now
                self._add(queue)
                added = True
        if added:
            self._wake()
        for queue in sorted(actual - desired):
            if now - self._asked.get(("cancel", queue), -RETRY_SECONDS) >= RETRY_SECONDS:
                self._asked[("cancel", queue)] = now
                self._cancel(queue)

    def _add(self, queue: str) -> None:
        """Have the consumer's own loop start reading ``queue`` (thread-safe: ``call_soon``)."""
        name = self.settings.broker_queue(queue)
        self.consumer.call_soon(
            self.consumer.add_task_queue, name, exchange=name, exchange_type="direct", routing_key=name
        )

    def _wake(self) -> None:
        """Cut short the consumer's blocked read on Redis, so a queue just added is read now.

        kombu reads Redis with a ``BRPOP`` over the queues it read when it sent it, and a queue added
        meanwhile waits for that read to time out (``polling_interval``, and Redis times a blocked
        read out only at its ``hz``: 0.1 s at the default). The consumer's connections carry the name
        :func:`modelq.celery_app.consumer_name` gave them; ``CLIENT UNBLOCK`` ends the read as if it had
        timed out, and the consumer's loop, running the queued change first, reads again with the new
        queue. Nothing to do on RabbitMQ, which starts a new consumer at once.
        """
        name = (self.app.conf.broker_transport_options or {}).get("client_name")
        if not name:
            return
        try:
            with self.app.pool.acquire(block=True, timeout=1.0) as connection:
                client = connection.default_channel.client
                # The read's connection is found once (CLIENT LIST lists every client of the server) and
                # looked for again only when that id unblocks nothing: reconnected, or not reading now.
                if self._read_id is not None and client.client_unblock(self._read_id):
                    return
                for entry in client.client_list(_type="normal"):
                    if entry.get("name") == name and entry.get("cmd") == "brpop":
                        self._read_id = int(entry["id"])
                        client.client_unblock(self._read_id)
                        break  # the name is this process's own: one consumer, one read
        except Exception:  # only a delay is at stake: the read times out on its own
            log.debug("could not wake the consumer's read", exc_info=True)

    def _cancel(self, queue: str) -> None:
        self.consumer.call_soon(self.consumer.cancel_task_queue, self.settings.broker_queue(queue))

    def stranded(self, candidates: set[str], demand: dict[str, Demand], now: datetime) -> dict[str, int]:
        """Queues of ``candidates`` (those it can serve and no other worker has chosen) whose jobs have
        waited :data:`STRANDED_SECONDS` while this worker sat idle as long.

        The plan never leaves a worker idle beside such a backlog: a consumer that does not read
        what it was told to, a lost message or a wrong view of the other workers shows this way. Each is logged
        (once a minute per queue) and counted (``modelq_stranded_jobs`` in ``/metrics``); the worker
        then reads the queue itself, and a queue it already read is read anew.
        """
        if not self.idle():
            self._idle_since = None
            return {}
        self._idle_since = self._idle_since or time.monotonic()
        idle = time.monotonic() - self._idle_since
        if idle < STRANDED_SECONDS:
            return {}
        found = {}
        for queue in sorted(candidates):
            waiting = demand.get(queue)
            if (
                waiting
                and waiting.queued
                and waiting.oldest
                and (now - waiting.oldest).total_seconds() >= STRANDED_SECONDS
            ):
                found[queue] = waiting.queued
                if time.monotonic() - self._warned.get(queue, -60.0) >= 60.0:
                    self._warned[queue] = time.monotonic()
                    log.warning(
                        "%d job(s) have waited over %.0f s in %s while this worker (%s), which can serve them, "
                        "sat idle for %.0f s: reading it%s",
                        waiting.queued,
                        STRANDED_SECONDS,
                        queue,
                        self.hostname,
                        idle,
                        " anew" if queue in self._read_before else "",
                    )
                # Read, yet nothing came: subscribe again (once per STRANDED_SECONDS). The queue stays
                # stranded, and counted, for as long as its jobs wait beside this idle worker: a
                # gauge that showed it for one tick would never reach a scrape.
                resubscribed = self._resubscribed.get(queue)
                if queue in self._read_before and (
                    resubscribed is None or time.monotonic() - resubscribed >= STRANDED_SECONDS
                ):
                    self._resubscribed[queue] = time.monotonic()
                    self._cancel(queue)
                    self._add(queue)
        return found

    @staticmethod
    def idle() -> bool:
        """Whether this worker has no job in hand (none running, none received and waiting)."""
        from celery.worker.state import active_requests, reserved_requests

        return not active_requests and not reserved_requests

    def _pinned(self, known: set[str]) -> set[str]:
        return known if self.settings.worker_models else set()

    def _state(self, reading: set[str], held: set[str], stranded: dict[str, int], known: set[str]) -> tuple:
        """What this worker publishes, in a form that tells a change (compared every tick)."""
        return (
            frozenset(reading),
            tuple(sorted(self.chosen.items())),
            frozenset(held),
            tuple(sorted(stranded.items())),
            frozenset(self._pinned(known)),
        )

    def _rows(
        self, reading: set[str], held: set[str], stranded: dict[str, int], known: set[str]
    ) -> list[dict[str, Any]]:
        """This worker's consumer rows, as it publishes them (built only when they are written)."""
        pinned = self._pinned(known)
        epoch = datetime.fromtimestamp(0, timezone.utc)
        rows = [
            {
                "queue": "",
                "reading": False,
                "chosen": False,
                "held": False,
                "since": epoch,
                "slots": self.capacity,
                "serves": bool(pinned),
                "stranded": 0,
            }
        ]
        for queue in sorted(reading | set(self.chosen) | held | pinned):
            rows.append(
                {
                    "queue": queue,
                    "reading": queue in reading,
                    "chosen": queue in self.chosen,
                    "held": queue in held,
                    "since": self.chosen.get(queue, epoch),
                    "slots": None,
                    "serves": queue in pinned,
                    "stranded": stranded.get(queue, 0),
                }
            )
        return rows

    def publish(self, reading: set[str], held: set[str], stranded: dict[str, int], known: set[str]) -> None:
        self._read_before = reading
        state = self._state(reading, held, stranded, known)
        if state == self._published and time.monotonic() - self._published_at < HEARTBEAT_SECONDS:
            return
        self.store.report_consumers(self.hostname, self._rows(reading, held, stranded, known))
        self._published, self._published_at = state, time.monotonic()

    # The thread --------------------------------------------------------------------

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # the broker or database blinked: try again next tick
                log.warning("affinity tick failed", exc_info=True)
                self._stop.wait(1.0)
            self._stop.wait(IDLE_TICK_SECONDS if self.idle() else TICK_SECONDS)
        try:
            self.store.forget_consumers(self.hostname)
        except Exception:
            log.debug("could not clear this worker's consumer rows", exc_info=True)

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

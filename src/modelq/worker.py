"""Worker bootstrap: the worker runtime, the Celery signal handlers that drive it, and ``modelq worker``."""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any

from celery import Celery, signals

log = logging.getLogger(__name__)


#: This process's worker (made at worker_init, in the main process; a prefork child inherits it).
_worker: WorkerRuntime | None = None


def connect(app: Celery) -> None:
    """Connect modelq's worker signal handlers for ``app``; the app factory calls it for each app it builds.

    Celery's signals are process-wide: each handler acts only for a worker, a task or a pool process of
    ``app``, so several apps in one process (tests, a script beside a worker) never act on each other's
    workers or job stores. The handlers live as long as the app (signals hold them weakly).
    """

    def of_app(sender: Any) -> bool:
        return getattr(sender, "app", None) is app

    def ours() -> WorkerRuntime | None:
        return _worker if _worker is not None and _worker.app is app else None

    def on_worker_init(sender: Any = None, **_: Any) -> None:
        if of_app(sender):
            _make_worker_runtime(sender)
            _survive_connection_loss(sender)

    def on_after_setup(sender: str | None = None, instance: Any = None, **_: Any) -> None:
        if of_app(instance):
            from modelq.models import reporting

            reporting.worker_name = sender

    def on_process_init(**_: Any) -> None:
        # A prefork child: the job store re-creates its engine per process (it checks the
        # pid) and the child builds its own residency; models load here, never in the parent.
        if (worker := ours()) is not None:
            worker.start_models()

    def on_ready(sender: Any = None, **_: Any) -> None:
        if (worker := ours()) is not None:
            worker.start(sender)

    def on_process_shutdown(**_: Any) -> None:
        if (worker := ours()) is not None:
            worker.forget_child()

    def on_shutdown(**_: Any) -> None:
        if (worker := ours()) is not None:
            worker.stop()

    def on_task_failure(
        sender: Any = None, task_id: str | None = None, exception: BaseException | None = None, **_: Any
    ) -> None:
        # Failures the task body never saw (hard time limit, a lost worker) reach the record here.
        if of_app(sender) and task_id:
            app.modelq.store.mark_failed_by(task_id, exception or RuntimeError("the task failed without an exception"))

    def on_task_revoked(sender: Any = None, request: Any = None, terminated: bool = False, **_: Any) -> None:
        if of_app(sender) and request is not None:
            app.modelq.store.cancel(request.id, "terminated" if terminated else "cancelled by request")

    handlers = [
        (signals.worker_init, on_worker_init),
        (signals.celeryd_after_setup, on_after_setup),
        (signals.worker_process_init, on_process_init),
        (signals.worker_ready, on_ready),
        (signals.worker_process_shutdown, on_process_shutdown),
        (signals.worker_shutdown, on_shutdown),
        (signals.task_failure, on_task_failure),
        (signals.task_revoked, on_task_revoked),
    ]
    for signal, handler in handlers:
        signal.connect(handler)
    app.modelq.signal_handlers = handlers


def _make_worker_runtime(sender: Any) -> None:
    global _worker
    app = sender.app
    pool_cls = getattr(sender, "pool_cls", None)
    name = pool_cls if isinstance(pool_cls, str) else getattr(pool_cls, "__module__", "")
    prefork = "prefork" in str(name)
    processes = max(int(getattr(sender, "concurrency", 1) or 1), 1) if prefork else 1
    _worker = WorkerRuntime(app, prefork=prefork, processes=processes)
    if prefork and cuda_initialised():
        raise SystemExit(
            "modelq: refusing to start a prefork worker: CUDA is already initialised in this process, "
            "and a forked child cannot use it. Run GPU queues with --pool solo or --pool threads."
        )


def cuda_initialised() -> bool:
    torch = sys.modules.get("torch")
    return bool(torch is not None and torch.cuda.is_initialized())


def _survive_connection_loss(sender: Any) -> None:
    """On Redis, keep the worker and its running jobs' messages through a lost broker connection.

    kombu puts a channel's unacknowledged messages back on their queues when the channel closes,
    and acknowledges on the channel a message came on. After a lost connection both go wrong:
    the jobs behind those messages may still be running here, so putting them back would let
    another worker run them at the same time; and kombu tries either on a channel whose transport
    Celery has already detached, raises ``AttributeError`` and the worker exits instead of
    reconnecting. So the lost channel's messages stay where they are (the lease keeps renewing
    those of running jobs, see :mod:`modelq.lease`), and a running job's message is acknowledged
    on a fresh connection when the job ends. A message of a job that ends with a requeue (its pool
    process died) is left to come back one visibility timeout later.
    """
    from modelq.broker import is_redis_url

    if not is_redis_url(sender.app.conf.broker_url):
        return
    from celery.utils.imports import symbol_by_name
    from celery.worker.state import active_requests, reserved_requests

    base = symbol_by_name(sender.consumer_cls)

    class Consumer(base):  # type: ignore[misc, valid-type]
        def on_connection_error_after_connected(self, exc: Exception) -> None:
            transport = getattr(self.connection, "_transport", None)
            for channel in list(getattr(transport, "channels", None) or []):
                channel.do_restore = False
            # Reserved too: a prefork pool may have a job that has not reported its start yet.
            for request in {*active_requests, *reserved_requests}:
                if request.task.acks_late and not request.acknowledged:
                    _acknowledge_elsewhere(self.app, request)
            super().on_connection_error_after_connected(exc)

    sender.consumer_cls = Consumer


def _acknowledge_elsewhere(app: Celery, request: Any) -> None:
    """Send a running job's acknowledgement over a fresh connection (its own was lost)."""
    from modelq.lease import delivery_tag, settle_elsewhere

    tag = delivery_tag(request)
    if tag is None:
        return

    def on_ack(*_: Any, **__: Any) -> None:
        settle_elsewhere(app, tag)

    def on_reject(_logger: Any = None, _errors: Any = None, requeue: bool = False) -> None:
        if not requeue:
            settle_elsewhere(app, tag)

    request._on_ack = on_ack
    request.on_reject = on_reject


class WorkerRuntime:
    """What one modelq worker runs beside Celery: its models and the threads that serve them.

    Made when the worker starts (``worker_init``, in the main process), started when it is ready,
    stopped when it shuts down. It owns every thread modelq adds to a worker, each with a stop:

    * the residency sweep (expires idle models, keeps the reported figures fresh), in each process
      that runs jobs: this one for the solo and threads pools, every child of a prefork pool;
    * the affinity controller (which model queues the consumer reads: :mod:`modelq.models.affinity`),
      when the worker serves a queue whose jobs route by model;
    * the lease renewer (:mod:`modelq.lease`), on Redis;
    * the reconciler (:mod:`modelq.reconciler`).
    """

    def __init__(self, app: Celery, *, prefork: bool, processes: int) -> None:
        self.app = app
        self.prefork = prefork
        self.processes = processes
        #: The started threads' owners, each with a ``stop()`` (the sweep's is this object's event).
        self.parts: list[Any] = []
        self._sweeping = threading.Event()

    @property
    def runtime(self) -> Any:
        return getattr(self.app, "modelq", None)

    def start(self, consumer: Any) -> None:
        """The worker is ready: start the models here (unless a prefork pool's children run them) and the threads."""
        if self.runtime is None:
            return
        if not self.prefork:  # solo and threads pools run jobs in this process
            self.start_models()
        for start in (self._start_affinity, self._start_leases, self._start_reconciler):
            part = start(consumer)
            if part is not None:
                part.start()
                self.parts.append(part)

    def start_models(self) -> None:
        """In a process that runs jobs: size torch's threads, preload models, start the residency sweep."""
        runtime = self.runtime
        if runtime is None:
            return
        size_torch_threads(torch_threads(runtime.settings, self.processes))
        residency = runtime.residency
        for name, spec in residency.registry.all().items():
            if spec.preload:
                try:
                    residency.acquire(name)
                    residency.release(name)
                except Exception:
                    log.exception("could not preload model %s", name)
        self._sweeping.clear()
        threading.Thread(target=self._sweep, args=(runtime,), name="modelq-residency", daemon=True).start()

    def _sweep(self, runtime: Any) -> None:
        """Expire idle models and keep the reported figures fresh, every second until stopped."""
        residency = runtime.residency
        reporter = next((h for h in residency.hooks if hasattr(h, "flush_if_stale")), None)
        while not self._sweeping.wait(1.0):
            try:
                residency.expire_idle()
                if reporter is not None:
                    reporter.flush_if_stale()
            except Exception:
                log.exception("residency sweep failed")

    def stop(self) -> None:
        """The worker shuts down: stop every thread, then clear what it published in the job store."""
        from modelq.models import reporting

        self._sweeping.set()
        for part in self.parts:
            part.stop()
        self.parts.clear()
        runtime = self.runtime
        if runtime is None or reporting.worker_name is None:
            return
        try:
            runtime.store.forget_residency(reporting.worker_name, None)
            runtime.store.forget_consumers(reporting.worker_name)
        except Exception:
            log.debug("could not clear this worker's figures", exc_info=True)

    def forget_child(self) -> None:
        """A prefork child exits: its residency rows go (the parent's stay until the worker stops)."""
        from modelq.models import reporting

        runtime = self.runtime
        if runtime is None or reporting.worker_name is None:
            return
        try:
            runtime.store.forget_residency(reporting.worker_name, os.getpid())
        except Exception:
            log.debug("could not clear residency figures", exc_info=True)

    def _start_affinity(self, consumer: Any) -> Any:
        """Steer this worker between model queues when it serves a queue that routes jobs by model."""
        from modelq.models import reporting
        from modelq.models.affinity import AffinityController, model_capacity
        from modelq.tasks import registered_tasks

        app, runtime = self.app, self.runtime
        if reporting.worker_name is None:
            return None
        settings = runtime.settings
        consumed = {settings.logical_queue(queue.name) for queue in getattr(consumer.task_consumer, "queues", [])}
        model_tasks = [spec for spec in registered_tasks().values() if spec.models and spec.name in app.tasks]
        bases = sorted({settings.queue_for(spec.name, spec.queue) for spec in model_tasks} & consumed)
        if not bases:
            return None
        registry = runtime.residency.registry
        devices = {
            "cpu" if registry.all()[m].device == "cpu" else "cuda"
            for spec in model_tasks
            for m in spec.models
            if m in registry.all()
        } or {"cpu"}
        return AffinityController(
            app, consumer, reporting.worker_name, bases, model_capacity(settings, devices), in_process=not self.prefork
        )

    def _start_leases(self, _consumer: Any) -> Any:
        """On Redis, keep renewing the messages this worker holds, so a long job is never redelivered."""
        from modelq.broker import is_redis_url
        from modelq.lease import LeaseRenewer

        if not is_redis_url(self.app.conf.broker_url):
            return None
        return LeaseRenewer(self.app, self.runtime.settings.visibility_timeout)

    def _start_reconciler(self, consumer: Any) -> Any:
        """Every worker may reconcile the job store with the broker; one at a time does (a lease).

        In a prefork pool's parent too: a fork waits for the reconciler to leave the job store
        (:mod:`modelq.jobs.fork_guard`), so a pool process never starts with SQLite locked for good.
        """
        from modelq.reconciler import Reconciler

        hostname = getattr(consumer, "hostname", None) or f"worker-{os.getpid()}"
        return Reconciler(self.app, f"{hostname}:{os.getpid()}")


def torch_threads(settings: Any, processes: int) -> int:
    """torch's intra-op threads for one of ``processes`` pool processes.

    ``torch_threads`` when set; else the user's own ``OMP_NUM_THREADS``, as torch itself would;
    else a fair share of the cores this worker may use.
    """
    if settings.torch_threads:
        return settings.torch_threads
    if os.environ.get("OMP_NUM_THREADS", "").isdigit() and int(os.environ["OMP_NUM_THREADS"]) > 0:
        return int(os.environ["OMP_NUM_THREADS"])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(cores // max(processes, 1), 1)


def size_torch_threads(threads: int) -> None:
    """Give torch ``threads`` intra-op threads in this process, now or when it is first imported."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)


def run_worker(
    app: Celery,
    *,
    queues: list[str],
    pool: str | None = None,
    concurrency: int | None = None,
    hostname: str | None = None,
    loglevel: str = "INFO",
    max_tasks_per_child: int | None = None,
) -> None:
    """Run a Celery worker for ``queues`` in this process (blocks until it stops)."""
    settings = app.modelq.settings
    unknown = [q for q in queues if q not in settings.queues]
    if unknown:
        from modelq.errors import ConfigError

        raise ConfigError("queues", f"unknown queue(s) {', '.join(unknown)}; configured: {', '.join(settings.queues)}")
    kinds = [settings.queues[q] for q in queues]
    pool = pool or kinds[0].pool
    if concurrency is None:
        concurrency = settings.worker_concurrency or next((k.concurrency for k in kinds if k.concurrency), None)
    prefetch = max(k.prefetch_multiplier for k in kinds)
    argv = [
        "worker",
        "-Q",
        ",".join(settings.broker_queue(q) for q in queues),
        "--pool",
        pool,
        "--loglevel",
        loglevel,
        "--prefetch-multiplier",
        str(prefetch),
        "--without-mingle",
        "--without-gossip",
    ]
    if settings.task_events:
        argv.append("-E")
    if concurrency:
        argv += ["--concurrency", str(concurrency)]
    if hostname:
        argv += ["--hostname", hostname]
    if max_tasks_per_child:
        argv += ["--max-tasks-per-child", str(max_tasks_per_child)]
    app.worker_main(argv)

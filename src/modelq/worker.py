"""Worker bootstrap: Celery signal handlers and the ``modelq worker`` entry point."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Any

from celery import Celery, signals

log = logging.getLogger(__name__)


def _runtime(sender: Any):  # noqa: ANN202
    app = getattr(sender, "app", None)
    return getattr(app, "modelq", None)


# Which app and pool this worker process runs (set at worker_init, in the parent).
_state: dict[str, Any] = {"app": None, "prefork": False, "processes": 1}


@signals.worker_init.connect
def _refuse_cuda_before_fork(sender: Any = None, **_: Any) -> None:
    app = getattr(sender, "app", None)
    pool_cls = getattr(sender, "pool_cls", None)
    name = pool_cls if isinstance(pool_cls, str) else getattr(pool_cls, "__module__", "")
    _state["app"] = app
    _state["prefork"] = "prefork" in str(name)
    _state["processes"] = max(int(getattr(sender, "concurrency", 1) or 1), 1) if _state["prefork"] else 1
    if _state["prefork"] and cuda_initialised():
        raise SystemExit(
            "modelq: refusing to start a prefork worker: CUDA is already initialised in this process, "
            "and a forked child cannot use it. Run GPU queues with --pool solo or --pool threads."
        )


def cuda_initialised() -> bool:
    torch = sys.modules.get("torch")
    return bool(torch is not None and torch.cuda.is_initialized())


@signals.worker_init.connect
def _survive_connection_loss(sender: Any = None, **_: Any) -> None:
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

    app = getattr(sender, "app", None)
    if app is None or not is_redis_url(app.conf.broker_url):
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


@signals.worker_process_init.connect
def _start_models_in_child(**_: Any) -> None:
    # A prefork child: the job store re-creates its engine per process (it checks the
    # pid) and the child builds its own residency; models load here, never in the parent.
    _start_models()


@signals.worker_ready.connect
def _start_models_in_main_process(sender: Any = None, **_: Any) -> None:
    if not _state["prefork"]:  # solo and threads pools run jobs in this process
        _start_models()
    _start_affinity(sender)
    _start_leases()
    _start_reconciler(sender)


def _start_reconciler(consumer: Any) -> None:
    """Every worker may reconcile the job store with the broker; one at a time does (a lease).

    Not in the parent of a prefork pool over a SQLite store: SQLite keeps its lock bookkeeping
    per process, and a child forked while a thread of the parent was inside a transaction
    inherits a lock nobody will release (that child then finds the database locked for good).
    ``modelq up`` also starts threads-pool workers, which reconcile.
    """
    from modelq.reconciler import Reconciler

    app = _state["app"]
    if getattr(app, "modelq", None) is None:
        return
    if _state["prefork"] and app.modelq.settings.job_database_url.startswith("sqlite"):
        return
    hostname = getattr(consumer, "hostname", None) or f"worker-{os.getpid()}"
    Reconciler(app, f"{hostname}:{os.getpid()}").start()


def _start_leases() -> None:
    """On Redis, keep renewing the messages this worker holds, so a long job is never redelivered."""
    from modelq.broker import is_redis_url
    from modelq.lease import LeaseRenewer

    app = _state["app"]
    runtime = getattr(app, "modelq", None)
    if runtime is None or not is_redis_url(app.conf.broker_url):
        return
    LeaseRenewer(app, runtime.settings.visibility_timeout).start()


def _start_affinity(consumer: Any) -> None:
    """Steer this worker between model queues when it serves a queue that routes jobs by model."""
    from modelq.models import reporting
    from modelq.models.affinity import AffinityController, model_capacity
    from modelq.tasks import registered_tasks

    app = _state["app"]
    runtime = getattr(app, "modelq", None)
    if runtime is None or reporting.worker_name is None:
        return
    settings = runtime.settings
    consumed = {settings.logical_queue(queue.name) for queue in getattr(consumer.task_consumer, "queues", [])}
    model_tasks = [spec for spec in registered_tasks().values() if spec.models and spec.name in app.tasks]
    bases = sorted({settings.queue_for(spec.name, spec.queue) for spec in model_tasks} & consumed)
    if not bases:
        return
    registry = runtime.residency.registry
    devices = {"cpu" if registry.all()[m].device == "cpu" else "cuda"
               for spec in model_tasks for m in spec.models if m in registry.all()} or {"cpu"}  # fmt: skip
    controller = AffinityController(app, consumer, reporting.worker_name, bases, model_capacity(settings, devices),
                                    in_process=not _state["prefork"])  # fmt: skip
    _state["affinity"] = controller
    controller.start()


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


def _start_models() -> None:
    app = _state["app"]
    runtime = getattr(app, "modelq", None)
    if runtime is None:
        return
    size_torch_threads(torch_threads(runtime.settings, _state["processes"]))
    residency = runtime.residency
    for name, spec in residency.registry.all().items():
        if spec.preload:
            try:
                residency.acquire(name)
                residency.release(name)
            except Exception:
                log.exception("could not preload model %s", name)
    threading.Thread(target=_sweep, args=(runtime,), name="modelq-residency", daemon=True).start()


def _sweep(runtime: Any) -> None:
    """Expire idle models and keep the reported figures fresh."""
    residency = runtime.residency
    reporter = next((h for h in residency.hooks if hasattr(h, "flush_if_stale")), None)
    while True:
        time.sleep(1.0)
        try:
            residency.expire_idle()
            if reporter is not None:
                reporter.flush_if_stale()
        except Exception:
            log.exception("residency sweep failed")


@signals.celeryd_after_setup.connect
def _remember_worker_name(sender: str | None = None, conf: Any = None, **_: Any) -> None:
    from modelq.models import reporting

    reporting.worker_name = sender


@signals.worker_process_shutdown.connect
def _forget_child(**_: Any) -> None:
    _forget(os.getpid())


@signals.worker_shutdown.connect
def _forget_worker(**_: Any) -> None:
    _forget(None)


def _forget(pid: int | None) -> None:
    from modelq.models import reporting

    runtime = getattr(_state["app"], "modelq", None)
    if runtime is None or reporting.worker_name is None:
        return
    try:
        runtime.store.forget_residency(reporting.worker_name, pid)
        if pid is None:
            if _state.get("affinity") is not None:
                _state["affinity"].stop()
            runtime.store.forget_consumers(reporting.worker_name)
    except Exception:
        log.debug("could not clear residency figures", exc_info=True)


@signals.task_failure.connect
def _record_failure(sender: Any = None, task_id: str | None = None, exception: BaseException | None = None, **_: Any) -> None:
    # Failures the task body never saw (hard time limit, a lost worker) reach the record here.
    runtime = _runtime(sender)
    if runtime is not None and task_id:
        runtime.store.mark_failed(task_id, f"{type(exception).__name__}: {exception}")


@signals.task_revoked.connect
def _record_revoked(sender: Any = None, request: Any = None, terminated: bool = False, **_: Any) -> None:
    runtime = _runtime(sender)
    if runtime is not None and request is not None:
        runtime.store.cancel(request.id, "terminated" if terminated else "cancelled by request")


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
    argv = ["worker", "-Q", ",".join(settings.broker_queue(q) for q in queues), "--pool", pool, "--loglevel", loglevel, "-E",
            "--prefetch-multiplier", str(prefetch), "--without-mingle", "--without-gossip"]  # fmt: skip
    if concurrency:
        argv += ["--concurrency", str(concurrency)]
    if hostname:
        argv += ["--hostname", hostname]
    if max_tasks_per_child:
        argv += ["--max-tasks-per-child", str(max_tasks_per_child)]
    app.worker_main(argv)

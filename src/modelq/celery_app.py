"""The Celery app factory: queues, routes, serializers, acknowledgement, limits.

``create_celery_app(settings)`` builds a fully configured app and binds every
registered modelq task to it. Nothing connects to a broker here: Celery
connects lazily when a message is sent or a worker starts.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import socket
import uuid
from datetime import datetime, timedelta, timezone
from functools import cached_property
from typing import Any

from celery import Celery, Task
from celery.exceptions import Ignore, Reject, Retry
from kombu import Exchange, Queue
from kombu.utils.json import dumps as json_dumps
from kombu.utils.json import loads as json_loads

from modelq import tasks as sdk
from modelq.broker import broker_url, is_redis_url, result_backend_url
from modelq.config import Settings
from modelq.errors import ConfigError, HandedOver, TaskCancelled
from modelq.jobs import dispatch
from modelq.jobs.artifacts import LocalArtifactStore
from modelq.jobs.records import utcnow
from modelq.jobs.store import JobStore
from modelq.lease import heartbeats, quiet_for

log = logging.getLogger(__name__)

#: modelq priorities run 0 (lowest) to 9 (highest), as in AMQP.
MAX_PRIORITY = 9
#: Message header of a job the reconciler published again (modelq.reconciler): it starts only from queued.
REPUBLISHED_HEADER = "modelq_republished"
#: Marks a redelivered message that was deferred while its job's run still beat (see modelq.lease).
REDELIVERED_HEADER = "modelq_redelivered"
#: Entry point group of the modules that register workloads: modelq's built-ins (pyproject.toml)
#: and any installed plugin package's, all imported like the modules named in ``MODELQ_IMPORTS``.
WORKLOADS_GROUP = "modelq.workloads"


class Runtime:
    """What tasks and interfaces share for one app: settings, job store, artifacts."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        #: (signal, handler) pairs :func:`modelq.worker.connect` connected for this app; held here
        #: because Celery's signals hold their handlers weakly.
        self.signal_handlers: list[tuple[Any, Any]] = []

    @cached_property
    def store(self) -> JobStore:
        store = JobStore(self.settings.job_database_url, lock_dir=self.settings.home_dir)
        store.migrate()
        return store

    @cached_property
    def artifacts(self) -> LocalArtifactStore:
        return LocalArtifactStore(self.settings.artifacts_dir)

    @property
    def residency(self):  # noqa: ANN201 - modelq.models.Residency
        """This process's resident models (a forked child builds its own, never the parent's)."""
        if self._residency is None or self._residency_pid != os.getpid():
            from modelq.models import residency_for
            from modelq.models.reporting import StoreReporter

            self._residency = residency_for(self.settings, hooks=[StoreReporter(self)])
            self._residency_pid = os.getpid()
        return self._residency

    _residency = None
    _residency_pid = 0


class JobTask(Task):
    """Base class of every modelq task: keeps the job record in step with the run.

    The record is written inside the task call, before Celery stores the result in
    its backend, so a client woken by the backend always reads a finished record.
    """

    spec: sdk.TaskSpec

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        request = self.request
        if request.called_directly:
            return self.run(*args, **kwargs)
        runtime: Runtime = self.app.modelq
        store = runtime.store
        job_id = request.id
        queue = runtime.settings.logical_queue((request.delivery_info or {}).get("routing_key") or "default")
        runner = "local" if request.is_eager else "worker"
        # A message redelivered (its worker died, or gave it back) may start its job again while the
        # record still says running, as may a retry (published before its job's record says queued
        # again); the first delivery of a job starts it only from queued. A job whose message the
        # reconciler published again has a new generation: a message of an older one (the original,
        # thought lost, turning up or coming back) never starts it, so it never runs twice at once.
        # A redelivered message restarts a running job only once its run's heartbeat went quiet.
        generation = int(request.get(REPUBLISHED_HEADER) or 0)
        redelivered = bool((request.delivery_info or {}).get("redelivered")) or bool(request.get(REDELIVERED_HEADER))
        only_queued = bool(generation) or not (redelivered or request.retries or request.is_eager)
        quiet = quiet_for(runtime.settings.run_heartbeat_interval)
        attempt = store.mark_running(
            job_id,
            worker=request.hostname,
            task=self.name,
            queue=queue,
            input=kwargs,
            runner=runner,
            only_queued=only_queued,
            generation=None if request.retries else generation,
            quiet_since=utcnow() - quiet if redelivered else None,
        )
        if attempt is None:
            if redelivered and store.runs_elsewhere(job_id, utcnow() - quiet):
                self._defer(job_id, kwargs, queue, generation, quiet.total_seconds())
            log.info("job %s was cancelled, finished or started by another message; skipping", job_id)
            raise Ignore()
        dispatch.release_quietly(
            self.app, queue, in_background=True
        )  # it left the broker's window: the next held job may go
        deliveries = attempt - (request.retries or 0)  # a retry is a new message; a crash redelivers the same one
        if deliveries > runtime.settings.max_deliveries:
            self._dead_letter(job_id, kwargs, deliveries)
            raise Ignore()
        ctx = sdk.JobContext(
            id=job_id,
            task=self.name,
            attempt=attempt,
            store=store,
            artifacts=runtime.artifacts,
            settings=runtime.settings,
            residency_source=lambda: runtime.residency,
            wake_waiters=functools.partial(wake_waiters, self.app),
        )
        token = sdk.enter_job(ctx)
        heartbeats.hold(store, job_id, runtime.settings.run_heartbeat_interval)
        try:
            result = self.run(*args, **kwargs)
            ctx.flush()
            # Round-trip through the message serializer so the record holds exactly
            # what a Celery client receives, and an unserialisable result fails here.
            result = json_loads(json_dumps(result))
        except Retry as exc:
            store.mark_retrying(job_id, str(exc.exc or exc), due=_due(exc.when))
            raise
        except (Ignore, Reject):
            raise
        except TaskCancelled:
            log.info("job %s stopped: cancelled while running", job_id)
            self._ended(queue)
            raise Ignore() from None
        except HandedOver:
            log.debug("job %s handed over to later tasks", job_id)
            store.mark_handed_over(job_id)  # no heartbeat from here on: the reconciler must not take it for lost
            raise Ignore() from None  # it still runs: no cap slot is given back
        except Exception as exc:
            store.mark_failed_by(job_id, exc)
            self._ended(queue)
            raise
        finally:
            heartbeats.release(job_id)
            sdk.leave_job(token)
            for name in ctx.held:
                runtime.residency.release(name)
        store.mark_succeeded(job_id, result)
        self._ended(queue)
        return result

    def _ended(self, queue: str) -> None:
        """A job of ``queue`` ended: for a capped model one fewer runs, and the next held job may go."""
        if dispatch.cap_of(self.app.modelq.settings, queue)[0] is not None:
            dispatch.release_quietly(self.app, queue, in_background=True)

    def _defer(self, job_id: str, kwargs: dict, queue: str, generation: int, seconds: float) -> None:
        """A message came back while its job's run still beats (a broker outage outlived the lease, a
        connection closed under a running job): check again in ``seconds``, with a copy marked as a
        redelivery. The copy runs the job if that run died meanwhile, and is dropped if it ended."""
        from modelq.jobs.service import publish

        log.warning(
            "job %s: its message came back while it still runs elsewhere; checking again in %.0f s", job_id, seconds
        )
        publish(
            self.app, self.name, job_id, kwargs, queue, None, generation=generation, redelivered=True, countdown=seconds
        )

    def _dead_letter(self, job_id: str, kwargs: dict, deliveries: int) -> None:
        """Fail a job that ended its worker on every delivery, and park it in the dead-letter queue."""
        from modelq.ops import publish_dead_letter

        reason = (
            f"stopped: delivered {deliveries} times (max_deliveries is {self.app.modelq.settings.max_deliveries}); "
            "each run ended its worker process (a crash or out-of-memory kill?)"
        )
        log.error("job %s %s", job_id, reason)
        # The letter first: a client that reads the record as failed (it is woken then) and looks in the
        # dead-letter queue finds it there. A letter that cannot be sent does not keep the job running.
        try:
            publish_dead_letter(self.app, {"id": job_id, "task": self.name, "input": kwargs, "reason": reason})
        except Exception:
            log.exception("job %s: could not park it in the dead-letter queue", job_id)
        self.app.modelq.store.mark_failed(job_id, reason)


def consumer_name() -> str:
    """A name for this process's broker connections, unique in the cluster (``CLIENT LIST`` shows it):
    the worker's affinity controller finds its own consumer's blocked read by it."""
    return f"modelq-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def has_result_backend(app: Celery) -> bool:
    """Whether the app has a result backend: clients wait on it, and chords need one (their counter)."""
    from celery.backends.base import DisabledBackend

    return bool(app.conf.result_backend) and not isinstance(app.backend, DisabledBackend)


def wake_waiters(app: Celery, job_id: str, result: Any) -> None:
    """Wake the clients waiting on a job that a later task finished (:meth:`modelq.tasks.JobContext.hand_over`):
    they listen on its Celery result, which only its own task would otherwise have stored."""
    if not has_result_backend(app):
        return
    try:
        app.backend.mark_as_done(job_id, result)
    except Exception:
        log.warning("could not publish the result of job %s to the result backend", job_id, exc_info=True)


def _due(when: Any) -> datetime:
    """When a retry's message is due: ``Retry.when`` is a countdown in seconds or an ETA."""
    if isinstance(when, datetime):
        return when if when.tzinfo else when.replace(tzinfo=timezone.utc)
    if isinstance(when, (int, float)):
        return utcnow() + timedelta(seconds=float(when))
    return utcnow()


def redis_priority(priority: int) -> int:
    """kombu's Redis transport serves 0 first; modelq's 9 is the most urgent."""
    return MAX_PRIORITY - priority


def _queues(settings: Settings) -> list[Queue]:
    names = [settings.broker_queue(name) for name in settings.queues]
    return [
        Queue(name, Exchange(name, type="direct"), routing_key=name, queue_arguments={"x-max-priority": MAX_PRIORITY})
        for name in names
    ]


def _bind_task(app: Celery, spec: sdk.TaskSpec, settings: Settings) -> None:
    options: dict[str, Any] = {}
    if spec.retry_for:
        options.update(
            autoretry_for=spec.retry_for,
            retry_backoff=True,
            retry_backoff_max=settings.retry_backoff_max,
            retry_jitter=True,
        )
    options.update(spec.options)  # the task's own Celery options win over modelq's defaults
    options["max_retries"] = spec.retries if spec.retries is not None else settings.task_max_retries
    for key in ("time_limit", "soft_time_limit", "rate_limit"):
        if getattr(spec, key) is not None:
            options[key] = getattr(spec, key)
    task = app.task(spec.func, name=spec.name, base=JobTask, bind=False, shared=False, **options)
    task.spec = spec


def import_task_modules(settings: Settings) -> None:
    """Import the workloads installed packages declare (entry point group ``modelq.workloads``:
    modelq's own and any plugin package's), then the user modules named in ``MODELQ_IMPORTS``."""
    for module in (*_declared_workloads(), *settings.imports):
        importlib.import_module(module)


@functools.cache
def _declared_workloads() -> tuple[str, ...]:
    """The modules of the ``modelq.workloads`` entry points, read once per process (a scan of every
    installed distribution's metadata, some 15 ms: the installed set does not change while it runs)."""
    from importlib.metadata import entry_points

    points = entry_points(group=WORKLOADS_GROUP)
    if not any(point.dist is not None and point.dist.name == "modelq" for point in points):
        raise ConfigError(
            "entry points",
            f"no {WORKLOADS_GROUP} entry points of modelq: modelq is not installed in this environment "
            "(run ./scripts/setup, or pip install -e . in a checkout)",
        )
    return tuple(point.value for point in points)


def create_celery_app(settings: Settings, *, start_broker: bool = False) -> Celery:
    """Build the Celery app for these settings.

    Args:
        settings: the settings in force.
        start_broker: with the embedded broker, start it when it is not running.

    Returns:
        A Celery app with modelq's queues and every registered task; ``app.modelq``
        is the :class:`Runtime` (job store, artifacts) tasks and interfaces share.
    """
    import_task_modules(settings)
    broker = broker_url(settings, start=start_broker)
    backend = result_backend_url(settings)
    app = Celery("modelq", broker=broker, backend=backend, set_as_current=False)
    transport_options: dict[str, Any] = {"visibility_timeout": settings.visibility_timeout}
    if is_redis_url(broker):
        transport_options.update(
            priority_steps=list(range(MAX_PRIORITY + 1)),
            queue_order_strategy="priority",
            # kombu's BRPOP waits 1 s by default, and a queue the worker starts to read (model
            # affinity) is only read after the current wait ends: the affinity controller cuts
            # that wait short (CLIENT UNBLOCK on the connection named here, see
            # modelq.models.affinity), and 0.2 s bounds it where that fails.
            polling_interval=0.2,
            client_name=consumer_name(),
            # Look for messages of dead workers every quarter of the visibility timeout (kombu's
            # default is every 100 s); live workers renew theirs (modelq.lease).
            unacked_restore_interval=max(1, min(10, settings.visibility_timeout // 4)),
            unacked_restore_throttle=1,
        )
    accept = sorted({settings.serializer, "json"})
    app.conf.update(
        # Never pickle: a message is data, not code.
        task_serializer=settings.serializer,
        result_serializer=settings.serializer,
        event_serializer="json",
        accept_content=accept,
        result_accept_content=accept,
        task_queues=_queues(settings),
        task_default_queue=settings.broker_queue("default"),
        task_default_exchange=settings.broker_queue("default"),
        task_default_routing_key=settings.broker_queue("default"),
        # With a queue prefix, remote control and events stay among this prefix's workers too.
        control_exchange=settings.broker_queue("celery"),
        event_exchange=settings.broker_queue("celeryev"),
        task_routes=(_router(settings),),
        # A job is acknowledged after it ran, so a crashed worker's job runs again.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        # Task events cost three broker messages per job: off unless asked for (Flower asks itself).
        worker_send_task_events=settings.task_events,
        # The job store records "running"; a STARTED result write per task would only add latency.
        task_track_started=False,
        result_expires=settings.result_expires,
        task_soft_time_limit=settings.task_soft_time_limit,
        task_time_limit=settings.task_time_limit,
        worker_max_tasks_per_child=settings.worker_max_tasks_per_child,
        worker_max_memory_per_child=settings.worker_max_memory_per_child,
        broker_transport_options=transport_options,
        result_backend_transport_options={"visibility_timeout": settings.visibility_timeout},
        broker_connection_retry_on_startup=True,
        # A worker reconnects for as long as it runs (Celery gives up after 100 tries, about 45
        # minutes, by default), waiting 2, 4, ... up to 30 s between tries.
        broker_connection_max_retries=None,
        worker_hijack_root_logger=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        enable_utc=True,
    )
    app.modelq = Runtime(settings)  # type: ignore[attr-defined]
    for spec in sdk.registered_tasks().values():
        _bind_task(app, spec, settings)
    from modelq import worker

    worker.connect(app)
    return app


def _router(settings: Settings):  # noqa: ANN202
    def route(name: str, args: Any, kwargs: Any, options: dict[str, Any], task: Any = None, **kw: Any) -> dict:
        spec = sdk.registered_tasks().get(name)
        return {"queue": settings.broker_queue(settings.queue_for(name, spec.queue if spec else None))}

    return route

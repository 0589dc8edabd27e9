"""Job operations shared by every interface: submit, get, list, wait, cancel.

The API, the CLI and the in-process client all call these, so a rule (an
idempotency key, a cap, the local fallback) holds the same everywhere.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

from celery import Celery
from celery.exceptions import TimeoutError as CeleryTimeout

from modelq.broker import is_redis_url
from modelq.celery_app import MAX_PRIORITY, REDELIVERED_HEADER, REPUBLISHED_HEADER, redis_priority
from modelq.errors import (
    BrokerUnavailable,
    InvalidInput,
    JobNotFound,
    JobTimeout,
    OwnerQueueFull,
    QueueFull,
    TaskNotFound,
)
from modelq.jobs import dispatch
from modelq.jobs.status import JobStatus
from modelq.models.affinity import model_queue
from modelq.tasks import TaskSpec, registered_tasks

_WORKER_PING_CACHE_SECONDS = 5.0
#: One quick retry of a publish (or of the result subscription before it), then 503: a broker
#: that is down refuses a submission within a fraction of a second.
SUBMIT_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.1, "interval_max": 0.1}


class JobService:
    """Operations on jobs for one Celery app (and its job store)."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        self.settings = app.modelq.settings
        # A submission subscribes to its result before it publishes; Celery's Redis result backend
        # retries a lost connection 20 times, a second apart. A submitter refuses at once instead
        # (503), and the client retries; workers keep the patient default. Backends are built per
        # thread on first use, from the configuration as it is then.
        options = app.conf.result_backend_transport_options = dict(app.conf.result_backend_transport_options or {})
        options.setdefault("retry_policy", SUBMIT_RETRY_POLICY)
        self._workers_seen_at = 0.0
        self._workers: list[str] = []

    @property
    def store(self):  # noqa: ANN201 - JobStore
        return self.app.modelq.store

    # Tasks -----------------------------------------------------------------------------

    def tasks(self) -> dict[str, TaskSpec]:
        return {name: spec for name, spec in registered_tasks().items() if name in self.app.tasks}

    def task_spec(self, name: str) -> TaskSpec:
        specs = self.tasks()
        if name not in specs:
            raise TaskNotFound(name, list(specs))
        return specs[name]

    # Submit ----------------------------------------------------------------------------

    def submit(
        self,
        task: str,
        input: Any = None,
        *,
        priority: int | str | None = None,
        idempotency_key: str | None = None,
        owner: str = "",
    ) -> dict[str, Any]:
        """Record a job and publish it to its queue.

        Returns:
            The job record; with an idempotency key used before by this owner, the
            earlier job (``"created": False``) and nothing is published.

        Raises:
            TaskNotFound: no such task.
            InvalidInput: input does not fit the task, or priority is out of range.
            BrokerUnavailable: the message could not be published (the job is marked failed).
        """
        spec = self.task_spec(task)
        kwargs = spec.check_input({} if input is None else input, self.settings)
        priority = dispatch.priority_value(priority)
        if priority is not None and not 0 <= priority <= MAX_PRIORITY:
            raise InvalidInput(f"priority must be between 0 and {MAX_PRIORITY}, got {priority}", field="priority")
        queue = self.settings.queue_for(spec.name, spec.queue)
        self._check_room(queue)
        self._check_owner_room(owner)
        model = spec.model_for(kwargs)
        if model is not None:
            # A queue per model lets workers keep serving the model they hold (affinity).
            queue = model_queue(queue, model)
        local = self.settings.fallback == "local" and not self.workers_available(self.settings.fallback_timeout)
        cap, _ = dispatch.cap_of(self.settings, queue)
        job, created = self.store.create(
            id=str(uuid.uuid4()),
            task=spec.name,
            input=kwargs,
            queue=queue,
            priority=priority,
            owner=owner,
            idempotency_key=idempotency_key,
            window=None if local else self.settings.dispatch_window,
            weight=dispatch.weight_of(self.settings, owner),
            hold=cap is not None,
        )
        if not created:
            return {**job, "created": False}
        held = job.pop("held", False)
        if local:
            self._run_locally(spec, job["id"], kwargs)
            return {**job, "created": True, "runner": "local"}
        if held:  # its turn comes when the jobs ahead start (see modelq.jobs.dispatch); maybe now
            dispatch.release_quietly(self.app, queue)
            return {**job, "created": True}
        try:
            self._publish(spec, job["id"], kwargs, queue, priority)
        except Exception as exc:
            self.store.delete(job["id"])  # refused: nothing stays recorded (the message was not sent)
            raise BrokerUnavailable(f"could not publish job to queue {queue!r}: {exc}") from exc
        return {**job, "created": True}

    def _check_room(self, queue: str) -> None:
        """Refuse a job (429) when its queue already holds ``max_queued`` waiting jobs."""
        config = self.settings.queues.get(queue)
        limit = config.max_queued if config is not None else None
        if limit is None:
            return
        queued = sum(
            count
            for name, (count, _) in self.store.backlog(queue).items()
            if name == queue or name.startswith(model_queue(queue, ""))
        )
        if queued >= limit:
            raise QueueFull(queue, queued, limit, self.settings.queue_full_retry_after)

    def _check_owner_room(self, owner: str) -> None:
        """Refuse a job (429) when its owner already has ``max_queued_per_owner`` jobs waiting (with API keys)."""
        limit = self.settings.max_queued_per_owner
        if limit is None or not owner or not self.settings.api_keys:
            return
        queued = self.store.queued_count(owner)
        if queued >= limit:
            raise OwnerQueueFull(owner, queued, limit, self.settings.queue_full_retry_after)

    def _publish(self, spec: TaskSpec, job_id: str, kwargs: dict, queue: str, priority: int | None) -> None:
        publish(self.app, spec.name, job_id, kwargs, queue, priority)

    def _run_locally(self, spec: TaskSpec, job_id: str, kwargs: dict) -> None:
        # apply() runs the task through the same JobTask call, eagerly: the record
        # says runner=local and is kept exactly as a worker would keep it.
        task = self.app.tasks[spec.name]
        thread = threading.Thread(
            target=task.apply, kwargs={"kwargs": kwargs, "task_id": job_id}, name=f"modelq-local-{job_id}", daemon=True
        )
        thread.start()

    def workers_available(self, timeout: float = 1.0) -> bool:
        return bool(self.workers(timeout))

    def workers(self, timeout: float = 1.0) -> list[str]:
        """Names of workers that answered a ping (cached for a few seconds)."""
        if time.monotonic() - self._workers_seen_at < _WORKER_PING_CACHE_SECONDS:
            return self._workers
        try:
            replies = self.app.control.ping(timeout=timeout) or []
        except Exception:  # an unreachable broker means no worker either
            replies = []
        self._workers = sorted(name for reply in replies for name in reply)
        self._workers_seen_at = time.monotonic()
        return self._workers

    # Read ------------------------------------------------------------------------------

    def get(self, job_id: str, owner: str | None = None, *, with_position: bool = True) -> dict[str, Any]:
        job = self.store.get(job_id, owner, with_position=with_position)
        if job is None:
            raise JobNotFound(job_id)
        return job

    def list(self, **filters: Any):  # noqa: ANN201 - JobPage
        status = filters.get("status")
        if status and status not in {s.value for s in JobStatus}:
            raise InvalidInput(
                f"status must be one of {', '.join(s.value for s in JobStatus)}, got {status!r}", field="status"
            )
        return self.store.list(**filters)

    def artifact_path(self, job_id: str, name: str, owner: str | None = None) -> Path:
        self.get(job_id, owner)
        return self.app.modelq.artifacts.open(job_id, name)

    # Wait and cancel -------------------------------------------------------------------

    def wait(self, job_id: str, timeout: float | None = None, owner: str | None = None) -> dict[str, Any]:
        """Block until the job finishes (succeeded, failed or cancelled).

        The result backend, when there is one, wakes the waiter as soon as the
        worker is done; the job store stays the source of truth.

        Raises:
            JobTimeout: it did not finish within ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        job = self.get(job_id, owner, with_position=False)
        backend = self.app.conf.result_backend
        poll = 0.01
        while not JobStatus(job["status"]).finished:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise JobTimeout(job_id, timeout or 0)
            step = 1.0 if remaining is None else min(1.0, remaining)
            if backend:
                self._wait_on_backend(job_id, step)
            else:
                time.sleep(min(poll, step))
                poll = min(poll * 2, 0.25)
            job = self.get(job_id, owner, with_position=False)
        return job

    def _wait_on_backend(self, job_id: str, timeout: float) -> None:
        result = self.app.AsyncResult(job_id)
        try:
            result.get(timeout=timeout, propagate=False, disable_sync_subtasks=False)
        except CeleryTimeout:
            # Unsubscribe now, while the broker is surely up, rather than whenever
            # the garbage collector gets to it.
            try:
                self.app.backend.remove_pending_result(result)
            except Exception:
                pass

    def cancel(self, job_id: str, owner: str | None = None) -> dict[str, Any]:
        """Cancel a job: a queued job never runs; a running one stops at its next progress point.

        Returns:
            The job record after the request (unchanged when it had already finished).
        """
        job = self.get(job_id, owner)
        if JobStatus(job["status"]).finished:
            return job
        self.store.cancel(job_id)
        try:
            self.app.control.revoke(job_id)
        except Exception:  # the record already says cancelled; workers check it before running
            pass
        return self.get(job_id, owner)


def publish(
    app: Celery,
    task: str,
    job_id: str,
    kwargs: dict,
    queue: str,
    priority: int | None,
    *,
    generation: int = 0,
    redelivered: bool = False,
    countdown: float | None = None,
) -> None:
    """Send a recorded job's message to its queue (the logical name; ``queue_prefix`` is added here).

    A republished message carries its generation (the job's republish count when it was sent): only
    a message of the job's current generation may start it (see modelq.reconciler). A deferred
    redelivery (``redelivered``, sent ``countdown`` seconds ahead) counts as its job's message coming
    back (see modelq.lease).
    """
    options: dict[str, Any] = {"task_id": job_id, "queue": app.modelq.settings.broker_queue(queue)}
    headers = {REPUBLISHED_HEADER: generation} if generation else {}
    if redelivered:  # a deferred redelivery (see modelq.lease)
        headers[REDELIVERED_HEADER] = True
    if headers:
        options["headers"] = headers
    if countdown is not None:
        options["countdown"] = countdown
    if priority is not None:
        options["priority"] = redis_priority(priority) if is_redis_url(app.conf.broker_url) else priority
    app.send_task(task, kwargs=kwargs, retry=True, retry_policy=SUBMIT_RETRY_POLICY, **options)

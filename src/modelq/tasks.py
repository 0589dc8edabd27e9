"""The task SDK: register functions as modelq tasks and report progress from inside them.

A task is a plain Python function whose keyword arguments are the job's input::

    import modelq

    @modelq.task(queue="cpu", retries=3, time_limit=600)
    def resize(path: str, width: int) -> dict:
        for i, page in enumerate(pages):
            modelq.progress(i / len(pages), f"page {i}")
        return {"ok": True}

Registration only records a :class:`TaskSpec`; the Celery app factory binds
every registered spec when it builds the app, so decorating has no side effect
on any broker.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from modelq.errors import HandedOver, InvalidInput, TaskCancelled

if TYPE_CHECKING:
    from modelq.jobs.artifacts import ArtifactStore
    from modelq.jobs.store import JobStore
    from modelq.models.residency import Residency

F = TypeVar("F", bound=Callable[..., Any])

#: Progress writes closer together than this are coalesced (the last one wins).
PROGRESS_MIN_INTERVAL = 0.2


@dataclass(frozen=True)
class TaskSpec:
    """What modelq knows about a registered task."""

    name: str
    func: Callable[..., Any]
    queue: str | None = None
    retries: int | None = None
    retry_for: tuple[type[BaseException], ...] = ()
    time_limit: float | None = None
    soft_time_limit: float | None = None
    rate_limit: str | None = None
    description: str = ""
    #: Models the task uses; jobs are routed so a worker that holds the model gets them.
    models: tuple[str, ...] = ()
    #: Input field that names the model (e.g. ``"model"``), when a request chooses it.
    model_arg: str | None = None
    #: Submit-time check: ``validate(input, settings)`` raises InvalidInput, or returns the
    #: input to queue (e.g. with defaults filled in), or None to keep it.
    validate: Callable[[dict[str, Any], Any], dict[str, Any] | None] | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def model_for(self, data: dict[str, Any]) -> str | None:
        """The model a job with this input will use, if one can be told before it runs."""
        if self.model_arg and data.get(self.model_arg):
            return str(data[self.model_arg])
        if self.model_arg and self.models:
            return self.models[0]  # the default when the request names none
        return self.models[0] if len(self.models) == 1 else None

    def check_input(self, data: Any, settings: Any = None) -> dict[str, Any]:
        """Check that ``data`` is an object whose keys bind to the function's parameters,
        then run the task's own ``validate`` hook with the submitter's settings.

        Raises:
            InvalidInput: input is not an object, misses a required argument or has an unknown one,
                or the task's hook refused it.
            ModelNotFound: it names a model a request may not use (:mod:`modelq.models.sources`).
        """
        if not isinstance(data, dict):
            raise InvalidInput(
                f"input for task {self.name!r} must be a JSON object, not {type(data).__name__}", field="input"
            )
        settings = settings or current_settings()
        check_storable(data, settings.max_input_depth)
        try:
            inspect.signature(self.func).bind(**data)
        except TypeError as exc:
            raise InvalidInput(f"input for task {self.name!r} does not fit: {exc}", field="input") from None
        if self.model_arg and data.get(self.model_arg) is not None:
            from modelq.models import sources

            name = data[self.model_arg]
            if not isinstance(name, str):
                raise InvalidInput(
                    f"{self.model_arg} must be a model name, not {type(name).__name__}", field=self.model_arg
                )
            sources.check(name, settings)
        if self.validate is not None:
            checked = self.validate(data, settings)
            if checked is not None:
                data = checked
        return data


def check_storable(data: Any, max_depth: int, field: str = "input") -> None:
    """Refuse input the job store cannot keep and give back as JSON, before anything is recorded.

    Lists and objects nest at most ``max_depth`` deep (``MODELQ_MAX_INPUT_DEPTH``); numbers are
    finite (JSON has no NaN or Infinity); object keys are strings; values are JSON's types.

    Raises:
        InvalidInput: naming the first offending place (``input.a[3]``).
    """
    stack: list[tuple[Any, int, str]] = [(data, 1, field)]
    while stack:
        value, depth, where = stack.pop()
        if isinstance(value, dict | list | tuple):
            if depth > max_depth:
                raise InvalidInput(
                    f"{where} nests lists and objects deeper than the limit of {max_depth} (MODELQ_MAX_INPUT_DEPTH)",
                    field=field,
                    limit=max_depth,
                )
            if isinstance(value, dict):
                for key, item in value.items():
                    if not isinstance(key, str):
                        raise InvalidInput(f"{where} has a key that is not a string: {key!r}", field=field)
                    stack.append((item, depth + 1, f"{where}.{key}"))
            else:
                stack.extend((item, depth + 1, f"{where}[{i}]") for i, item in enumerate(value))
        elif isinstance(value, float) and not math.isfinite(value):
            raise InvalidInput(f"{where} is {value}, which JSON cannot carry: use a finite number", field=field)
        elif not (value is None or isinstance(value, str | int | float)):  # bool is an int
            raise InvalidInput(f"{where} is a {type(value).__name__}, not a JSON value", field=field)


_REGISTRY: dict[str, TaskSpec] = {}


def task(
    name: str | None = None,
    *,
    queue: str | None = None,
    retries: int | None = None,
    retry_for: tuple[type[BaseException], ...] = (),
    time_limit: float | None = None,
    soft_time_limit: float | None = None,
    rate_limit: str | None = None,
    models: list[str] | tuple[str, ...] = (),
    model_arg: str | None = None,
    validate: Callable[[dict[str, Any], Any], dict[str, Any] | None] | None = None,
    **options: Any,
) -> Callable[[F], F]:
    """Register a function as a modelq task.

    Args:
        name: task name (default: the function's ``module.qualname``).
        queue: queue it goes to unless a configured route says otherwise.
        retries: how many times a failure matching ``retry_for`` is retried
            (exponential backoff with jitter); default ``MODELQ_TASK_MAX_RETRIES``.
        retry_for: exception classes that trigger a retry (default: none).
        time_limit: hard limit in seconds (the process running it is replaced).
        soft_time_limit: soft limit in seconds (``SoftTimeLimitExceeded`` is raised in the task).
        rate_limit: Celery rate limit per worker, e.g. ``"10/m"``.
        models: models the task uses (``modelq.get_model(name)`` inside it); the
            first is the default when ``model_arg`` is not in the input.
        model_arg: the input field that names the model, when requests choose it.
        validate: ``validate(input, settings)`` checks the input at submit time (raise
            InvalidInput for a 422 naming the field); it may return the input to queue.
        **options: other Celery task options.

    Returns:
        The function itself, unchanged, so it can still be called directly.
    """

    def register(func: F) -> F:
        spec = TaskSpec(
            name=name or f"{func.__module__}.{func.__qualname__}",
            func=func,
            queue=queue,
            retries=retries,
            retry_for=tuple(retry_for),
            time_limit=time_limit,
            soft_time_limit=soft_time_limit,
            rate_limit=rate_limit,
            description=(inspect.getdoc(func) or "").split("\n", 1)[0],
            models=tuple(models),
            model_arg=model_arg,
            validate=validate,
            options=options,
        )
        _REGISTRY[spec.name] = spec
        func.modelq_task = spec  # type: ignore[attr-defined]
        return func

    return register


def registered_tasks() -> dict[str, TaskSpec]:
    return dict(_REGISTRY)


# Inside a running task ------------------------------------------------------------------


@dataclass
class JobContext:
    """The job a task is running for; reach it with :func:`current_job`."""

    id: str
    task: str
    attempt: int
    store: JobStore
    artifacts: ArtifactStore
    settings: Any = None
    #: Where this job's models come from (built on first use: most jobs use none).
    residency_source: Callable[[], Residency] | None = None
    #: Models this job holds (released when it ends).
    held: list[str] = field(default_factory=list)
    #: Wakes the clients waiting on a job (the runtime's: through the Celery result backend).
    wake_waiters: Callable[[str, Any], None] | None = None
    _last_write: float = 0.0
    _pending: tuple[float, str | None] | None = None

    @property
    def residency(self) -> Residency | None:
        return self.residency_source() if self.residency_source is not None else None

    def progress(self, fraction: float, message: str | None = None) -> None:
        fraction = min(max(float(fraction), 0.0), 1.0)
        now = time.monotonic()
        if fraction < 1.0 and now - self._last_write < PROGRESS_MIN_INTERVAL:
            self._pending = (fraction, message)
            return
        self._write(fraction, message, now)

    def flush(self) -> None:
        if self._pending is not None:
            self._write(*self._pending, time.monotonic())

    def _write(self, fraction: float, message: str | None, now: float) -> None:
        self._pending = None
        self._last_write = now
        if not self.store.set_progress(self.id, fraction, message):
            # The record is no longer running: it was cancelled (or finished elsewhere).
            raise TaskCancelled(self.id)

    def cancelled(self) -> bool:
        """Whether the job was cancelled (read from the job store)."""
        return self.store.status_of(self.id) == "cancelled"

    def check_cancelled(self) -> None:
        """Raise :class:`~modelq.errors.TaskCancelled` when the job was cancelled."""
        if self.cancelled():
            raise TaskCancelled(self.id)

    def save_artifact(self, name: str, data: bytes, content_type: str | None = None) -> dict[str, Any]:
        """Store a file produced by this job; it is served at ``/v1/jobs/{id}/artifacts/{name}``."""
        meta = self.artifacts.put(self.id, name, data, content_type)
        self.store.add_artifact(self.id, meta)
        return meta

    def hand_over(self) -> NoReturn:
        """Stop this task and leave its job running: the task has published the job's further work (a
        chord, a chain), whose last task finishes the job through :meth:`job`. The worker slot is free
        at once, so no task ever waits for another."""
        raise HandedOver(self.id)

    def job(self, job_id: str) -> HandedOverJob:
        """The job ``job_id`` that an earlier task handed over, for a later task that carries its work on."""
        return HandedOverJob(job_id, self.store, self.wake_waiters or (lambda _job_id, _result: None))


@dataclass(frozen=True)
class HandedOverJob:
    """A job whose own task handed it over (:meth:`JobContext.hand_over`): the tasks that carry its work
    on read its input, report its progress and finish it here, as its own task would have."""

    id: str
    store: JobStore
    wake_waiters: Callable[[str, Any], None]

    def status(self) -> str | None:
        return self.store.status_of(self.id)

    def input(self) -> dict[str, Any]:
        """The job's input as it was submitted.

        Raises:
            LookupError: the job has no record (it was deleted).
        """
        record = self.store.get(self.id, with_position=False)
        if record is None:
            raise LookupError(f"job {self.id!r} has no record")
        return record["input"] or {}

    def progress(self, fraction: float, message: str | None = None) -> bool:
        """Report progress; False when the job no longer runs (it was cancelled, or failed)."""
        return self.store.set_progress(self.id, min(max(float(fraction), 0.0), 1.0), message)

    def succeed(self, result: Any) -> bool:
        """Finish the job with ``result`` and wake the clients waiting on it; False when it no longer ran."""
        if not self.store.mark_succeeded(self.id, result):
            return False
        self.wake_waiters(self.id, result)
        return True

    def fail(self, error: BaseException | str, *, where: str | None = None) -> None:
        """Fail the job with the exception that stopped its work (its type, message and fields are kept)
        or a one-line reason; ``where`` names the step (``"island 2 failed in epoch 3"``)."""
        if isinstance(error, BaseException):
            self.store.mark_failed_by(self.id, error, where=where)
        else:
            self.store.mark_failed(self.id, f"{where}: {error}" if where else error)


_current: ContextVar[JobContext | None] = ContextVar("modelq_current_job", default=None)


def enter_job(ctx: JobContext) -> Token[JobContext | None]:
    """Make ``ctx`` the job of the calling code (the runtime does, as a task's body starts); give the
    token to :func:`leave_job` when the body ends."""
    return _current.set(ctx)


def leave_job(token: Token[JobContext | None]) -> None:
    _current.reset(token)


def current_context() -> JobContext | None:
    """The job the calling code runs for, or None outside a modelq task (a script, a notebook):
    for helpers that behave differently inside a job, such as :func:`modelq.models.get_model`."""
    return _current.get()


def current_job() -> JobContext:
    """The job the calling task runs for.

    Raises:
        RuntimeError: called outside a modelq task.
    """
    ctx = _current.get()
    if ctx is None:
        raise RuntimeError("modelq.current_job() is only available inside a running modelq task")
    return ctx


def current_settings() -> Any:
    """The settings of the running job's app inside a task; the environment's elsewhere."""
    ctx = _current.get()
    if ctx is not None and ctx.settings is not None:
        return ctx.settings
    from modelq.config import load_settings

    return load_settings()


def progress(fraction: float, message: str | None = None) -> None:
    """Report progress (0..1) of the running job; a no-op outside a task.

    Raises:
        TaskCancelled: the job was cancelled; let it propagate so the task stops here.
    """
    ctx = _current.get()
    if ctx is not None:
        ctx.progress(fraction, message)

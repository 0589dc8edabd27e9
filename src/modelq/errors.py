"""One exception tree for modelq.

Every error a user can meet derives from :class:`ModelqError` and carries the
data that explains it. The HTTP API maps these classes to status codes in one
table (``modelq.api.errors.STATUSES``); the CLI maps them to exit codes in another
(``modelq.cli``).
"""

from __future__ import annotations

import json
from typing import Any


class ModelqError(Exception):
    """Base class of every modelq error."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {"error": type(self).__name__, "message": self.message, **self.details}


class ConfigError(ModelqError):
    """The configuration is invalid; the message names the bad key."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"invalid configuration: {key}: {problem}", key=key)
        self.key = key


class InsecureMonitor(ModelqError):
    """Flower would be served without authentication where it should not be."""


class InsecureApi(ModelqError):
    """The API would be served beyond this machine with no API key configured."""


class Unauthorized(ModelqError):
    """A request came without a valid API key."""


class QueueFull(ModelqError):
    """A queue holds as many waiting jobs as its cap allows; try again later."""

    def __init__(self, queue: str, queued: int, limit: int, retry_after: int) -> None:
        super().__init__(
            f"queue {queue!r} has {queued} jobs waiting, its limit (max_queued) is {limit}; retry in {retry_after}s",
            queue=queue,
            limit=limit,
            retry_after=retry_after,
        )
        self.retry_after = retry_after


class OwnerQueueFull(ModelqError):
    """An owner has as many jobs waiting as ``max_queued_per_owner`` allows; try again later."""

    def __init__(self, owner: str, queued: int, limit: int, retry_after: int) -> None:
        super().__init__(
            f"owner {owner!r} has {queued} jobs waiting, the limit per owner (max_queued_per_owner) "
            f"is {limit}; retry in {retry_after}s",
            owner=owner,
            limit=limit,
            retry_after=retry_after,
        )
        self.retry_after = retry_after


class InvalidInput(ModelqError):
    """A request or job input is malformed or out of limits."""

    def __init__(self, message: str, field: str | None = None, **details: Any) -> None:
        super().__init__(message, field=field, **details)
        self.field = field


class NameNotFound(InvalidInput):
    """A request names something that does not exist (a model path, a bundled sample); ``field``
    says which of its fields."""


class PayloadTooLarge(InvalidInput):
    """A request body is larger than ``MODELQ_MAX_REQUEST_BYTES``."""


class TaskNotFound(ModelqError):
    """No task is registered under the requested name."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(
            f"unknown task {name!r}; registered tasks: {', '.join(sorted(known)) or 'none'}",
            task=name,
        )


class JobNotFound(ModelqError):
    """No job has this id (or it belongs to somebody else)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id!r} not found", job_id=job_id)


class ArtifactNotFound(ModelqError):
    def __init__(self, job_id: str, name: str) -> None:
        super().__init__(f"job {job_id!r} has no artifact {name!r}", job_id=job_id, name=name)


class TaskCancelled(Exception):
    """Raised inside a running task (by ``progress()`` and ``check_cancelled()``) when its job was
    cancelled: let it propagate, and the task stops there and its job stays cancelled.

    A control-flow signal, not a modelq error: no interface ever answers with it (an API request about
    a cancelled job answers :class:`JobCancelled`, 409).
    """

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id!r} was cancelled")
        self.job_id = job_id


class HandedOver(Exception):  # noqa: N818 - a signal, like TaskCancelled
    """Raised by :meth:`modelq.tasks.JobContext.hand_over`: the task published the job's further work
    (a chord, a chain) and stops; the job stays running until a later task finishes it through
    :meth:`modelq.tasks.JobContext.job`. A control-flow signal, not a modelq error.
    """

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id!r} was handed over to later tasks")
        self.job_id = job_id


class JobCancelled(ModelqError):
    """A request needs what a cancelled job would have made (its images, say): 409."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id!r} was cancelled", job_id=job_id)


class BrokerUnavailable(ModelqError):
    """The message broker cannot be reached (or the embedded one did not start)."""


class JobTimeout(ModelqError):
    """Waiting for a job ran past its deadline (the job itself goes on)."""

    def __init__(self, job_id: str, timeout: float) -> None:
        super().__init__(f"job {job_id!r} did not finish within {timeout:g}s", job_id=job_id)


class JobFailed(ModelqError):
    """A job the caller waited on finished as failed or cancelled."""

    def __init__(self, job_id: str, status: str, error: str | None, failure: dict[str, Any] | None = None) -> None:
        super().__init__(f"job {job_id!r} {status}: {error or 'no error message'}", job_id=job_id)
        self.status = status
        self.error = error
        #: The job's structured failure (type, message, field, details); None when it was cancelled.
        self.failure = failure


class MissingDependency(ModelqError):
    """An optional dependency is not installed; the message names the extra."""

    def __init__(self, module: str, extra: str) -> None:
        super().__init__(
            f"{module!r} is not installed; install it with: pip install 'modelq[{extra}]'",
            module=module,
            extra=extra,
        )


class ModelNotFound(ModelqError):
    """No model is declared under this name."""

    def __init__(self, name: str, known: list[str], hint: str = "") -> None:
        super().__init__(
            f"unknown model {name!r}; declared models: {', '.join(sorted(known)) or 'none'}"
            + (f"; {hint}" if hint else ""),
            model=name,
        )


class ModelLoadError(ModelqError):
    """A model's loader failed."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"model {name!r} failed to load: {reason}", model=name)


class MemoryBudgetExceeded(ModelqError):
    """A model can never fit the memory budget of its device."""

    def __init__(self, name: str, size: int, budget: int, device: str) -> None:
        super().__init__(
            f"model {name!r} needs {format_bytes(size)} but the {device} budget is {format_bytes(budget)}",
            model=name,
            size=size,
            budget=budget,
            device=device,
        )


class InvalidDocument(InvalidInput):
    """An uploaded document cannot be used: encrypted, damaged, empty, or over a limit.

    Permanent: the same bytes fail the same way, so a job that raises it is never retried.
    ``reason`` is one of ``encrypted``, ``damaged``, ``empty``, ``no_text``, ``too_large``.
    """

    def __init__(self, message: str, reason: str = "damaged", field: str | None = "file", **details: Any) -> None:
        super().__init__(message, field=field, reason=reason, **details)
        self.reason = reason


class DocumentNotReady(ModelqError):
    """A document was asked for something (a search) before its ``enrich`` job succeeded."""

    def __init__(self, document_id: str, status: str, detail: str) -> None:
        super().__init__(
            f"document {document_id!r} cannot be searched ({status}): {detail}", document_id=document_id, status=status
        )


def failure_of(exc: BaseException) -> dict[str, Any]:
    """What a job record keeps of the exception that failed it (its ``failure``): the class name,
    the message, the input field at fault (if any) and the error's own data, JSON-safe."""
    if isinstance(exc, ModelqError):
        details = {k: v for k, v in exc.details.items() if k != "field"}
        message, field = exc.message, getattr(exc, "field", None)
    else:
        details, message, field = {}, str(exc), None
    return {
        "type": type(exc).__name__,
        "message": message,
        "field": field,
        "details": json.loads(json.dumps(details, default=str)),
    }


def failure_text(failure: dict[str, Any]) -> str:
    """The one-line ``error`` of a job record: ``"Type: message"``."""
    return f"{failure['type']}: {failure['message']}"


def failure_of_record(job: dict[str, Any]) -> dict[str, Any]:
    """A finished job's ``failure``; for a record written before failures were structured (no
    ``failure``), read back from its ``"Type: message"`` error."""
    if job.get("failure"):
        return job["failure"]
    kind, _, message = (job.get("error") or "").partition(": ")
    return {"type": kind if message else "", "message": message or kind, "field": None, "details": {}}


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"

"""Request and response bodies the API's routers share (jobs, errors, event streams)."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from modelq.jobs.dispatch import PRIORITY_WORDS


def _plain_json(value: Any, where: str = "") -> Any:
    """``value`` unchanged, if JSON as RFC 8259 has it can carry it; else a ValueError saying where.

    Python's JSON parser takes ``NaN``, ``Infinity`` and lone surrogates (``"\\ud800"``); the job
    store and every client would then get another value (``null``), or none at all (UTF-8 cannot
    encode a lone surrogate), so such input is refused where it arrives.
    """
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(
                f"{where or 'text'} is not valid Unicode (a lone surrogate at character {exc.start})"
            ) from None
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where or 'number'} is {value}: JSON numbers are finite")
    elif isinstance(value, dict):
        for key, item in value.items():
            _plain_json(key, f"a key of {where or 'the object'}")
            _plain_json(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _plain_json(item, f"{where}[{i}]")
    return value


#: A JSON object whose values are free-form (a task's input, a timetable instance), checked by :func:`_plain_json`.
JsonObject = Annotated[dict[str, Any], AfterValidator(_plain_json)]


class JobRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"task": "echo", "input": {"text": "hello"}, "priority": 5}]}
    )

    task: str = Field(min_length=1, max_length=200, description="registered task name, e.g. 'echo'")
    input: JsonObject = Field(default_factory=dict, description="keyword arguments of the task")
    priority: int | Literal["interactive", "batch"] | None = Field(
        default=None,
        description="0 (lowest) to 9 (highest); 'interactive' (9: a client waits on it, it goes ahead "
        "of batch jobs) or 'batch' (none, the default)",
    )
    idempotency_key: str | None = Field(
        default=None, min_length=1, max_length=200, description="a resubmission with the same key returns the same job"
    )

    @field_validator("priority", mode="before")
    @classmethod
    def _priority(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and value in PRIORITY_WORDS):
            return value
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 9:
            return value
        raise ValueError(f"must be a number from 0 (lowest) to 9 (highest), 'interactive' or 'batch'; got {value!r}")


class Progress(BaseModel):
    fraction: float
    message: str | None = None


class Failure(BaseModel):
    """Why a job failed, structured (the same as its one-line ``error``)."""

    type: str = Field(description="the error's class, e.g. InvalidInput, ModelLoadError, ValueError")
    message: str
    field: str | None = Field(default=None, description="the input field at fault, when the error names one")
    details: dict[str, Any] = Field(default_factory=dict, description="the error's own data (e.g. model, limit)")


class JobOut(BaseModel):
    id: str
    task: str
    status: str
    input: Any = None
    progress: Progress
    queue: str
    priority: int | None = None
    queue_position: int | None = None
    worker: str | None = None
    runner: str = "worker"
    attempts: int = 0
    created_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    error: str | None = None
    failure: Failure | None = None
    result: Any = None
    artifacts: list[dict[str, Any]] = []
    idempotency_key: str | None = None
    republished: int = Field(
        default=0, description="times the reconciler published the job again after the broker lost its message"
    )
    created: bool | None = Field(default=None, description="False when an idempotency key returned an earlier job")


class JobList(BaseModel):
    jobs: list[JobOut]
    total: int
    limit: int
    offset: int


class OwnerOut(BaseModel):
    owner: str = Field(description="the owner of the API keys that submitted them ('' without keys)")
    queued: int = Field(description="jobs waiting to start")
    held: int = Field(description="of those, jobs the job store holds back for their turn (fair share)")
    running: int
    weight: float = Field(description="the owner's fair-share weight (owner_weights, default 1)")


class OwnerList(BaseModel):
    owners: list[OwnerOut]


class TaskOut(BaseModel):
    name: str
    queue: str
    description: str


def event_stream(description: str, events: tuple[str, ...]) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a Server-Sent Events route: its 200 is ``text/event-stream``, not JSON.

    The schema is that of one event (as OpenAPI 3.2 reads it): its name, one of ``events``, and
    its ``data``, a JSON document.
    """
    event = {
        "type": "object",
        "required": ["data"],
        "properties": {
            "event": {"type": "string", "enum": list(events)},
            "data": {"type": "string", "contentMediaType": "application/json"},
            "id": {"type": "string"},
            "retry": {"type": "integer"},
        },
    }
    return {
        200: {"description": f"Server-Sent Events: {description}", "content": {"text/event-stream": {"schema": event}}}
    }


class OpenAIErrorDetail(BaseModel):
    """OpenAI's error object; modelq's own fields of the error (``limit``, ``job_id``) come along."""

    model_config = ConfigDict(extra="allow")

    message: str
    type: str = Field(description="invalid_request_error, authentication_error, rate_limit_error, server_error")
    param: str | None = Field(default=None, description="the request field at fault")
    code: str | None = Field(default=None, description="modelq's name of the error (InvalidInput, ModelNotFound, ...)")


class OpenAIErrorOut(BaseModel):
    """The error body of the OpenAI-compatible routes (see :mod:`modelq.api.openai_errors`)."""

    error: OpenAIErrorDetail


class ErrorOut(BaseModel):
    """The body of every error answer: which error, what to do about it, and the error's own data."""

    model_config = ConfigDict(extra="allow")

    error: str = Field(description="the error's name: InvalidInput, JobNotFound, QueueFull, JobFailed, ...")
    message: str = Field(description="what went wrong, in words meant for the caller")
    field: str | None = Field(default=None, description="the request field at fault (InvalidInput and its kinds)")
    detail: list[dict[str, Any]] | None = Field(
        default=None, description="on a malformed request: each problem pydantic found (type, loc, msg)"
    )

"""Request and response bodies of the job API."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class JobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: str = Field(min_length=1, max_length=200, description="registered task name, e.g. 'echo'")
    input: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the task")
    priority: int | None = Field(default=None, ge=0, le=9, description="0 (lowest) to 9 (highest)")
    idempotency_key: str | None = Field(
        default=None, min_length=1, max_length=200, description="a resubmission with the same key returns the same job"
    )


class Progress(BaseModel):
    fraction: float
    message: str | None = None


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
    result: Any = None
    artifacts: list[dict[str, Any]] = []
    idempotency_key: str | None = None
    created: bool | None = Field(default=None, description="False when an idempotency key returned an earlier job")


class JobList(BaseModel):
    jobs: list[JobOut]
    total: int
    limit: int
    offset: int


class TaskOut(BaseModel):
    name: str
    queue: str
    description: str

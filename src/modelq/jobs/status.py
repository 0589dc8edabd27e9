"""A job's status: where it is in its life, and whether that life is over (no database imports, so
the client and the CLI can tell a finished job without loading SQLAlchemy)."""

from __future__ import annotations

import enum


class JobStatus(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in FINISHED


FINISHED = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


def is_finished(status: str | None) -> bool:
    """Whether a job in ``status`` (a :class:`JobStatus` or its name) has reached its final state."""
    return status in FINISHED

"""The job record: one row per job, the source of truth for its status and result."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from modelq.jobs.status import JobStatus


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class Job(Base):
    __tablename__ = "modelq_jobs"
    __table_args__ = (
        UniqueConstraint("owner", "idempotency_key", name="uq_modelq_jobs_owner_idempotency"),
        Index("ix_modelq_jobs_status_queue_created", "status", "queue", "created_at"),
        Index("ix_modelq_jobs_owner_created", "owner", "created_at"),
        Index("ix_modelq_jobs_finished", "finished_at"),
        Index("ix_modelq_jobs_dispatch", "status", "queue", "released_at", "fair_tag"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    task: Mapped[str] = mapped_column(String(200))
    input: Mapped[Any] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED.value)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    progress_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    queue: Mapped[str] = mapped_column(String(200), default="default")
    priority: Mapped[int | None] = mapped_column(Integer, nullable=True)
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    #: "worker" or "local" (the local fallback ran it in the submitting process).
    runner: Mapped[str] = mapped_column(String(16), default="worker")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: The error that failed it, structured: type, message, field, details (see modelq.errors.failure_of).
    failure: Mapped[Any] = mapped_column(JSON, nullable=True)
    result: Mapped[Any] = mapped_column(JSON, nullable=True)
    artifacts: Mapped[Any] = mapped_column(JSON, default=list)
    owner: Mapped[str] = mapped_column(String(200), default="")
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    #: Times the reconciler published the job again after the broker lost its message.
    republished: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: When the process running the job last said it still runs it (see modelq.lease.RunHeartbeat).
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    #: When its message went to the broker; None while the store holds it back for its turn (fair
    #: share, see modelq.jobs.dispatch).
    released_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    #: Its place among its queue's held jobs (start-time fair queuing over owners; lower goes first).
    fair_tag: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: When its task handed it over to later tasks (see modelq.tasks.JobContext.hand_over): it still
    #: runs, in no process of its own, so no heartbeat beats for it and the reconciler leaves it to them.
    handed_over_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


def record_dict(row: Any) -> dict[str, Any]:
    """A job row (a mapping of the table's columns) as the record the interfaces show."""
    return {
        "id": row["id"],
        "task": row["task"],
        "input": row["input"],
        "status": row["status"],
        "progress": {"fraction": row["progress"], "message": row["progress_message"]},
        "queue": row["queue"],
        "priority": row["priority"],
        "worker": row["worker"],
        "runner": row["runner"],
        "attempts": row["attempts"],
        "created_at": _iso(row["created_at"]),
        "started_at": _iso(row["started_at"]),
        "finished_at": _iso(row["finished_at"]),
        "error": row["error"],
        "failure": row.get("failure"),
        "result": row["result"],
        "artifacts": list(row["artifacts"] or []),
        "idempotency_key": row["idempotency_key"],
        "republished": row.get("republished") or 0,
    }


def aware(value: datetime) -> datetime:
    """``value`` with its zone: SQLite drops it, and the store always writes UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite drops the zone; the store always writes UTC
        value = value.replace(tzinfo=timezone.utc)
    return value.isoformat()


class ModelResidency(Base):
    """What one worker process holds: written by the worker, read by the API and ``inspect models``."""

    __tablename__ = "modelq_model_residency"

    worker: Mapped[str] = mapped_column(String(200), primary_key=True)
    pid: Mapped[int] = mapped_column(Integer, primary_key=True)
    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    device: Mapped[str] = mapped_column(String(32))
    resident: Mapped[bool] = mapped_column(Boolean)
    bytes: Mapped[int] = mapped_column(BigInteger)
    loads: Mapped[int] = mapped_column(Integer)
    evictions: Mapped[int] = mapped_column(Integer)
    hits: Mapped[int] = mapped_column(Integer)
    load_seconds: Mapped[float] = mapped_column(Float)
    last_used: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ModelConsumer(Base):
    """Which model queues one worker reads and holds: written by its placement controller every
    tick it changes (and every few seconds as a heartbeat), read by every other worker's. A row
    with an empty ``queue`` says the worker is alive and how many models it may hold."""

    __tablename__ = "modelq_model_consumers"

    worker: Mapped[str] = mapped_column(String(200), primary_key=True)
    queue: Mapped[str] = mapped_column(String(400), primary_key=True)
    reading: Mapped[bool] = mapped_column(Boolean)
    chosen: Mapped[bool] = mapped_column(Boolean)
    held: Mapped[bool] = mapped_column(Boolean)
    since: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    slots: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: A pinned worker (``--models``) serves only the queues of its rows with ``serves``; its
    #: row with an empty queue has ``serves`` set. Other workers serve any model.
    serves: Mapped[bool] = mapped_column(Boolean, default=False)
    #: Jobs that wait in this queue while this worker, which could serve them, sits idle.
    stranded: Mapped[int] = mapped_column(Integer, default=0)
    seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class DispatchLock(Base):
    """One row per queue (or per capped model) whose held jobs were released: a release locks its row,
    so two processes never release past a window or a cap at once (see modelq.jobs.dispatch)."""

    __tablename__ = "modelq_dispatch_locks"

    key: Mapped[str] = mapped_column(String(400), primary_key=True)


class Lease(Base):
    """A cluster-wide lease: one holder at a time, until ``expires_at`` (then anyone may take it)."""

    __tablename__ = "modelq_leases"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class QueueReport(Base):
    """What the reconciler last found for a queue with waiting jobs (see :mod:`modelq.reconciler`)."""

    __tablename__ = "modelq_queue_reports"

    queue: Mapped[str] = mapped_column(String(400), primary_key=True)
    #: Jobs the store holds as queued for this queue.
    waiting: Mapped[int] = mapped_column(Integer)
    #: Messages the broker holds in it (None: it would not say).
    messages: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: Live workers that read it, comma-separated.
    readers: Mapped[str] = mapped_column(Text, default="")
    #: Jobs waiting in it with nobody to serve them (0: none).
    stranded: Mapped[int] = mapped_column(Integer, default=0)
    seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

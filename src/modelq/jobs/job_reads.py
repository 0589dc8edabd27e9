"""What the interfaces read from the job store: one job, a page of jobs, what changed since a time,
counts for status and metrics. A part of :class:`modelq.jobs.store.JobStore`.

The statement fragments here (a job by id, unfinished, held, released, queued in a queue) are the
store's own too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, bindparam, func, or_, select

from modelq.jobs.records import Job, record_dict
from modelq.jobs.records import aware as _aware
from modelq.jobs.status import JobStatus

jobs = Job.__table__
UNFINISHED = or_(jobs.c.status == JobStatus.QUEUED.value, jobs.c.status == JobStatus.RUNNING.value)
BY_ID = jobs.c.id == bindparam("job_id")
#: A queued job whose message is not sent yet (fair share holds it for its turn), and one whose is.
HELD = jobs.c.released_at.is_(None)
RELEASED = jobs.c.released_at.is_not(None)
QUEUED_IN = (jobs.c.status == JobStatus.QUEUED.value) & (jobs.c.queue == bindparam("in_queue"))
STATUS = select(jobs.c.status).where(BY_ID)


def quiet_since(since: datetime) -> ColumnElement[bool]:
    """The job's run beat no heartbeat since ``since`` (or never): its process is gone (see modelq.lease)."""
    return or_(jobs.c.heartbeat_at.is_(None), jobs.c.heartbeat_at < since)


_SELECT = select(jobs).where(BY_ID)
_OWNER = select(jobs.c.owner).where(BY_ID)


@dataclass(frozen=True)
class JobPage:
    jobs: list[dict[str, Any]]
    total: int


class JobReads:
    """Reads of job records (mixed into :class:`~modelq.jobs.store.JobStore`, whose ``engine`` it uses)."""

    def get(self, job_id: str, owner: str | None = None, *, with_position: bool = True) -> dict[str, Any] | None:
        """One job's record; a queued job's includes its ``queue_position`` unless asked not to."""
        with self.engine.connect() as conn:
            row = conn.execute(_SELECT, {"job_id": job_id}).mappings().first()
            if row is None or (owner is not None and row["owner"] != owner):
                return None
            data = record_dict(row)
            if with_position and data["status"] == JobStatus.QUEUED.value:
                data["queue_position"] = self._queue_position(conn, row)
            return data

    def status_of(self, job_id: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(STATUS, {"job_id": job_id}).scalar_one_or_none()

    def owner_of(self, job_id: str) -> str | None:
        """Who submitted a job (``""`` when the API has no keys); None when there is no such job."""
        with self.engine.connect() as conn:
            return conn.execute(_OWNER, {"job_id": job_id}).scalar_one_or_none()

    def find_idempotent(self, owner: str, key: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = (
                conn.execute(select(jobs).where(jobs.c.owner == owner, jobs.c.idempotency_key == key))
                .mappings()
                .first()
            )
            return record_dict(row) if row is not None else None

    def changed_since(self, since: datetime, owner: str | None, *, limit: int) -> list[dict[str, Any]]:
        """Jobs that may have changed: every queued or running job (at most ``limit``, oldest
        first, each with its ``queue_position``), then those created or finished since ``since``.

        Rows carry every column but the (possibly large) input and result; ``owner`` None means
        everyone's.
        """
        light = [column for column in jobs.c if column.name not in ("input", "result")]
        with self.engine.connect() as conn:
            active = (
                conn.execute(select(*light).where(UNFINISHED).order_by(jobs.c.created_at).limit(limit)).mappings().all()
            )
            recent = (
                conn.execute(
                    select(*light)
                    .where(~UNFINISHED, or_(jobs.c.finished_at >= since, jobs.c.created_at >= since))
                    .order_by(jobs.c.created_at)
                )
                .mappings()
                .all()
            )
        positions: dict[str, int] = {}
        ahead: dict[str, int] = {}
        # A queued job's position counts the queued jobs before it in its queue: those on the broker
        # (oldest first), then the held ones in the order they are released.
        for row in sorted((r for r in active if r["status"] == JobStatus.QUEUED.value), key=_turn_key):
            ahead[row["queue"]] = ahead.get(row["queue"], 0) + 1
            positions[row["id"]] = ahead[row["queue"]]
        return [
            {**row, "queue_position": positions.get(row["id"])}
            for row in [*active, *recent]
            if owner is None or row["owner"] == owner
        ]

    @staticmethod
    def _queue_position(conn: Connection, row: Any) -> int:
        """1 + the queued jobs of its queue before it: on the broker, those released before it; held,
        those released before it (every released one, and the held ones whose turn comes first)."""
        if row["released_at"] is not None:
            before = QUEUED_IN & RELEASED & (jobs.c.released_at < row["released_at"])
        else:
            priority, tag = row["priority"] or 0, row["fair_tag"] or 0.0
            earlier = or_(
                func.coalesce(jobs.c.priority, 0) > priority,
                (func.coalesce(jobs.c.priority, 0) == priority)
                & or_(jobs.c.fair_tag < tag, (jobs.c.fair_tag == tag) & (jobs.c.created_at < row["created_at"])),
            )
            before = QUEUED_IN & or_(RELEASED, HELD & earlier)
        ahead = conn.execute(select(func.count()).select_from(jobs).where(before), {"in_queue": row["queue"]})
        return int(ahead.scalar_one()) + 1

    def list(
        self,
        *,
        owner: str | None = None,
        status: str | None = None,
        task: str | None = None,
        queue: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> JobPage:
        query = select(jobs)
        if owner is not None:
            query = query.where(jobs.c.owner == owner)
        if status:
            query = query.where(jobs.c.status == status)
        if task:
            query = query.where(jobs.c.task == task)
        if queue:
            query = query.where(jobs.c.queue == queue)
        with self.engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(query.subquery())).scalar_one()
            rows = conn.execute(
                query.order_by(jobs.c.created_at.desc(), jobs.c.id).limit(limit).offset(offset)
            ).mappings()
            return JobPage(jobs=[record_dict(row) for row in rows], total=int(total))

    def queued_count(self, owner: str) -> int:
        """Jobs of ``owner`` waiting to start."""
        with self.engine.connect() as conn:
            query = select(func.count()).where(jobs.c.owner == owner, jobs.c.status == JobStatus.QUEUED.value)
            return int(conn.execute(query).scalar_one())

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(jobs.c.status, func.count()).group_by(jobs.c.status)).all()
        return {status: int(count) for status, count in rows}

    def owner_counts(self, owner: str | None = None) -> dict[str, dict[str, int]]:
        """Per owner (or only ``owner``): jobs queued, of those held for their turn, and running."""
        query = select(jobs.c.owner, jobs.c.status, HELD, func.count()).where(UNFINISHED)
        if owner is not None:
            query = query.where(jobs.c.owner == owner)
        with self.engine.connect() as conn:
            rows = conn.execute(query.group_by(jobs.c.owner, jobs.c.status, HELD)).all()
        counts: dict[str, dict[str, int]] = {}
        for name, status, held, count in rows:
            row = counts.setdefault(name, {"queued": 0, "held": 0, "running": 0})
            row[status] += int(count)
            if held and status == JobStatus.QUEUED.value:
                row["held"] += int(count)
        return counts

    def held_counts(self) -> dict[str, int]:
        """Held jobs per queue (queued, their messages not sent yet)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(jobs.c.queue, func.count())
                .where(jobs.c.status == JobStatus.QUEUED.value, HELD)
                .group_by(jobs.c.queue)
            ).all()
        return {queue: int(count) for queue, count in rows}

    def task_status_counts(self) -> list[tuple[str, str, int]]:
        """(task, status, jobs) for every pair present: what /metrics counts."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(jobs.c.task, jobs.c.status, func.count()).group_by(jobs.c.task, jobs.c.status)
            ).all()
        return [(task, status, int(count)) for task, status, count in rows]

    def finished_between(self, after: datetime, until: datetime) -> list[dict[str, Any]]:
        """Jobs that finished in ``(after, until]``, with their timestamps (for duration histograms)."""
        query = select(jobs.c.task, jobs.c.status, jobs.c.created_at, jobs.c.started_at, jobs.c.finished_at).where(
            jobs.c.finished_at > after, jobs.c.finished_at <= until
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [
            {**row, **{k: _aware(row[k]) for k in ("created_at", "started_at", "finished_at") if row[k]}}
            for row in rows
        ]


def _turn_key(row: Any) -> tuple:
    """A queued job's place in its queue: released ones first (in the order they went), then held ones."""
    if row["released_at"] is not None:
        return (0, _aware(row["released_at"]).timestamp(), 0.0, 0.0)
    return (1, -(row["priority"] or 0), row["fair_tag"] or 0.0, _aware(row["created_at"]).timestamp())

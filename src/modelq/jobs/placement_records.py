"""What placement reads from the job store and what workers report to it: the models each worker
process holds (residency), each model queue's backlog, arrivals, start and run times, and what each
worker reads and has chosen (consumers). A part of :class:`modelq.jobs.store.JobStore`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, case, func, insert, select

from modelq.jobs.records import Job, ModelConsumer, utcnow
from modelq.jobs.records import aware as _aware
from modelq.jobs.status import JobStatus

jobs = Job.__table__


class PlacementRecords:
    """Residency, demand and consumer rows (mixed into :class:`~modelq.jobs.store.JobStore`, whose
    ``engine``, ``transaction()`` and ``_lock()`` it uses)."""

    def report_residency(self, worker: str, pid: int, rows: list[dict[str, Any]]) -> None:
        """Replace what this worker process reported before with ``rows``."""
        from modelq.jobs.records import ModelResidency

        table = ModelResidency.__table__
        now = utcnow()
        with self.transaction() as conn:
            conn.execute(table.delete().where(table.c.worker == worker, table.c.pid == pid))
            if rows:
                conn.execute(insert(table), [{**row, "worker": worker, "pid": pid, "updated_at": now} for row in rows])

    def forget_residency(self, worker: str, pid: int | None = None) -> None:
        from modelq.jobs.records import ModelResidency

        table = ModelResidency.__table__
        query = table.delete().where(table.c.worker == worker)
        if pid is not None:
            query = query.where(table.c.pid == pid)
        with self.transaction() as conn:
            conn.execute(query)

    def residency(self) -> list[dict[str, Any]]:
        from modelq.jobs.records import ModelResidency, _iso

        table = ModelResidency.__table__
        with self.engine.connect() as conn:
            rows = conn.execute(select(table).order_by(table.c.worker, table.c.pid, table.c.model)).mappings()
            return [{**row, "last_used": _iso(row["last_used"]), "updated_at": _iso(row["updated_at"])} for row in rows]

    def backlog(self, queue_prefix: str) -> dict[str, tuple[int, datetime]]:
        """Queued jobs per queue whose name starts with ``queue_prefix``: (count, oldest created_at)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(jobs.c.queue, func.count(), func.min(jobs.c.created_at))
                .where(jobs.c.status == JobStatus.QUEUED.value, jobs.c.queue.startswith(queue_prefix, autoescape=True))
                .group_by(jobs.c.queue)
            ).all()
        return {queue: (int(count), _aware(oldest)) for queue, count, oldest in rows}

    def arrivals(self, queue_prefix: str, since: datetime, counted_since: datetime) -> dict[str, tuple[datetime, int]]:
        """Per queue starting with ``queue_prefix`` with a job created after ``since``: when its newest
        job arrived, and how many arrived after ``counted_since``."""
        recent = func.sum(case((jobs.c.created_at >= counted_since, 1), else_=0))
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(jobs.c.queue, func.max(jobs.c.created_at), recent)
                .where(
                    jobs.c.status.in_([s.value for s in JobStatus]),
                    jobs.c.queue.startswith(queue_prefix, autoescape=True),
                    jobs.c.created_at >= since,
                )
                .group_by(jobs.c.queue)
            ).all()
        return {queue: (_aware(latest), int(count or 0)) for queue, latest, count in rows}

    def latest_starts(self, queue_prefix: str, since: datetime) -> dict[str, datetime]:
        """When the latest job that finished after ``since`` started, per queue starting with
        ``queue_prefix``: when a worker last served the queue (its jobs since waited for another)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(jobs.c.queue, func.max(jobs.c.started_at))
                .where(jobs.c.finished_at >= since, jobs.c.queue.startswith(queue_prefix, autoescape=True))
                .group_by(jobs.c.queue)
            ).all()
        return {queue: _aware(latest) for queue, latest in rows if latest is not None}

    def run_seconds(self, queue_prefix: str, *, recent: int = 200) -> dict[str, list[float]]:
        """Run times (started to finished) of the latest succeeded jobs per queue starting with ``queue_prefix``."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(jobs.c.queue, jobs.c.started_at, jobs.c.finished_at)
                .where(
                    jobs.c.status == JobStatus.SUCCEEDED.value,
                    jobs.c.queue.startswith(queue_prefix, autoescape=True),
                    jobs.c.started_at.is_not(None),
                    jobs.c.finished_at.is_not(None),
                )
                .order_by(jobs.c.finished_at.desc())
                .limit(recent)
            ).all()
        seconds: dict[str, list[float]] = {}
        for queue, started, finished in rows:
            seconds.setdefault(queue, []).append((_aware(finished) - _aware(started)).total_seconds())
        return seconds

    def report_consumers(self, worker: str, rows: list[dict[str, Any]]) -> None:
        """Replace what ``worker`` reported before with ``rows`` (``seen_at`` set to now)."""
        with self.transaction() as conn:
            _replace_consumers(conn, worker, rows)

    def consumers(self, seen_after: datetime) -> list[dict[str, Any]]:
        """Every worker's reported consumer rows seen after ``seen_after``."""
        with self.engine.connect() as conn:
            return _consumer_rows(conn, seen_after)

    def settle_consumers(
        self, worker: str, seen_after: datetime, decide: Callable[[list[dict[str, Any]]], list[dict[str, Any]] | None]
    ) -> None:
        """One worker at a time: read every worker's consumer rows (seen after ``seen_after``), have
        ``decide`` choose ``worker``'s rows from them, and write those (None: write nothing).

        Two workers that decide from the same snapshot would both take the model a third one needs
        (and both load it); under this lock the second one sees the first one's choice.
        """
        with self.transaction() as conn:
            self._lock(conn, "modelq:placement")
            rows = decide(_consumer_rows(conn, seen_after))
            if rows is not None:
                _replace_consumers(conn, worker, rows)

    def forget_consumers(self, worker: str) -> None:
        table = ModelConsumer.__table__
        with self.transaction() as conn:
            conn.execute(table.delete().where(table.c.worker == worker))


def _consumer_rows(conn: Connection, seen_after: datetime) -> list[dict[str, Any]]:
    table = ModelConsumer.__table__
    rows = conn.execute(select(table).where(table.c.seen_at >= seen_after)).mappings().all()
    return [{**row, "since": _aware(row["since"]), "seen_at": _aware(row["seen_at"])} for row in rows]


def _replace_consumers(conn: Connection, worker: str, rows: list[dict[str, Any]]) -> None:
    table = ModelConsumer.__table__
    conn.execute(table.delete().where(table.c.worker == worker))
    if rows:
        now = utcnow()
        conn.execute(insert(table), [{**row, "worker": worker, "seen_at": now} for row in rows])

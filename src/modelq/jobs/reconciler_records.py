"""What the reconciler keeps in the job store: its lease, the jobs it checks against the broker, the
jobs it republishes or requeues, and the queue reports of the workers. A part of
:class:`modelq.jobs.store.JobStore`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from modelq.jobs.job_reads import quiet_since as run_quiet_since
from modelq.jobs.records import Job, utcnow
from modelq.jobs.records import aware as _aware
from modelq.jobs.status import JobStatus

jobs = Job.__table__


class ReconcilerRecords:
    """Leases, queued and running jobs to check, queue reports (mixed into
    :class:`~modelq.jobs.store.JobStore`, whose ``engine`` and ``transaction()`` it uses)."""

    def take_lease(self, name: str, holder: str, seconds: float) -> bool:
        """Hold lease ``name`` for ``seconds`` more, if ``holder`` holds it or it expired; True when held."""
        from datetime import timedelta

        from modelq.jobs.records import Lease

        table = Lease.__table__
        now = utcnow()
        until = now + timedelta(seconds=seconds)
        with self.transaction() as conn:
            taken = conn.execute(
                update(table)
                .where(table.c.name == name, or_(table.c.holder == holder, table.c.expires_at < now))
                .values(holder=holder, expires_at=until)
            ).rowcount
            if taken:
                return True
            if conn.execute(select(table.c.name).where(table.c.name == name)).first() is not None:
                return False
        try:
            with self.transaction() as conn:
                conn.execute(insert(table).values(name=name, holder=holder, expires_at=until))
        except IntegrityError:  # another process created it first
            return False
        return True

    def drop_lease(self, name: str, holder: str) -> None:
        from modelq.jobs.records import Lease

        table = Lease.__table__
        with self.transaction() as conn:
            conn.execute(table.delete().where(table.c.name == name, table.c.holder == holder))

    def queued_until(self, until: datetime, *, limit: int) -> list[dict[str, Any]]:
        """Jobs queued whose message was sent up to ``until``, oldest first (id, queue, republished, and
        ``created_at``: when the message was sent): what the reconciler counts against the broker. Held
        jobs (no message yet) are left out."""
        columns = (jobs.c.id, jobs.c.queue, jobs.c.released_at.label("created_at"), jobs.c.republished)
        with self.engine.connect() as conn:
            rows = (
                conn.execute(
                    select(*columns)
                    .where(jobs.c.status == JobStatus.QUEUED.value, jobs.c.released_at <= until)
                    .order_by(jobs.c.released_at)
                    .limit(limit)
                )
                .mappings()
                .all()
            )
        return [{**row, "created_at": _aware(row["created_at"])} for row in rows]

    def count_republished(self, job_id: str) -> dict[str, Any] | None:
        """Count one republish of a job still queued, and return what publishing it takes (task, input,
        queue, priority, and the new generation, ``republished``); None when it left ``queued`` meanwhile."""
        with self.transaction() as conn:
            counted = conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.status == JobStatus.QUEUED.value)
                .values(republished=jobs.c.republished + 1)
            ).rowcount
            if not counted:
                return None
            row = (
                conn.execute(
                    select(jobs.c.task, jobs.c.input, jobs.c.queue, jobs.c.priority, jobs.c.republished).where(
                        jobs.c.id == job_id
                    )
                )
                .mappings()
                .first()
            )
        return dict(row) if row is not None else None

    def running_before(self, before: datetime, *, quiet_since: datetime, limit: int) -> list[dict[str, Any]]:
        """Jobs running since before ``before`` whose run beat no heartbeat since ``quiet_since`` (id,
        worker, attempts, queue): the reconciler looks for orphans among them. A run that beats is
        held, whatever else says; a job handed over to later tasks runs in no process of its own."""
        with self.engine.connect() as conn:
            rows = (
                conn.execute(
                    select(jobs.c.id, jobs.c.worker, jobs.c.attempts, jobs.c.queue)
                    .where(
                        jobs.c.status == JobStatus.RUNNING.value,
                        jobs.c.started_at < before,
                        run_quiet_since(quiet_since),
                        jobs.c.handed_over_at.is_(None),  # its later tasks carry it; they are jobs of their own
                    )
                    .order_by(jobs.c.started_at)
                    .limit(limit)
                )
                .mappings()
                .all()
            )
        return [dict(row) for row in rows]

    def requeue_orphan(self, job_id: str, attempts: int) -> bool:
        """Put a running job whose worker and message are gone back to queued (counted as a republish);
        False when it moved on meanwhile."""
        with self.transaction() as conn:
            return bool(
                conn.execute(
                    update(jobs)
                    .where(jobs.c.id == job_id, jobs.c.status == JobStatus.RUNNING.value, jobs.c.attempts == attempts)
                    .values(status=JobStatus.QUEUED.value, error="its worker and its message were lost: queued again")
                ).rowcount
            )

    def report_queues(self, rows: list[dict[str, Any]]) -> None:
        """Replace the reconciler's per-queue findings with ``rows``."""
        from modelq.jobs.records import QueueReport

        table = QueueReport.__table__
        now = utcnow()
        with self.transaction() as conn:
            conn.execute(table.delete())
            if rows:
                conn.execute(insert(table), [{**row, "seen_at": now} for row in rows])

    def queue_reports(self, seen_after: datetime) -> list[dict[str, Any]]:
        from modelq.jobs.records import QueueReport

        table = QueueReport.__table__
        with self.engine.connect() as conn:
            rows = conn.execute(select(table).where(table.c.seen_at >= seen_after).order_by(table.c.queue)).mappings()
            return [{**row, "seen_at": _aware(row["seen_at"])} for row in rows]

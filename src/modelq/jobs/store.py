"""The job store: job records in SQLite (embedded) or PostgreSQL, through SQLAlchemy.

Every state change is one conditional UPDATE (SQLAlchemy Core), so a late write never resurrects a
cancelled job or overwrites a finished one.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    bindparam,
    case,
    create_engine,
    event,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError

from modelq.errors import failure_of, failure_text
from modelq.jobs.fork_guard import fork_guard
from modelq.jobs.job_reads import BY_ID, HELD, QUEUED_IN, RELEASED, STATUS, UNFINISHED, JobReads
from modelq.jobs.job_reads import quiet_since as run_quiet_since
from modelq.jobs.placement_records import PlacementRecords
from modelq.jobs.reconciler_records import ReconcilerRecords
from modelq.jobs.records import DispatchLock, Job, record_dict, utcnow
from modelq.jobs.status import JobStatus

#: The table, for Core statements: the hot paths (submit, start, finish, poll)
#: skip the ORM's unit of work, which costs more than the SQL itself here.
jobs = Job.__table__
#: Engines a forked process inherited from its parent: referenced so they are never closed here.
_INHERITED_ENGINES: list[Engine] = []

# Statements on the per-job path, built once: building a statement costs several
# times what SQLite takes to run it.
_INSERT = insert(jobs)
_MARK_RUNNING = (
    update(jobs)
    .where(BY_ID, UNFINISHED)
    .values(
        status=JobStatus.RUNNING.value,
        worker=bindparam("worker"),
        runner=bindparam("runner"),
        attempts=jobs.c.attempts + 1,
        started_at=func.coalesce(jobs.c.started_at, bindparam("now")),
        heartbeat_at=bindparam("now"),
        error=None,
    )
    .returning(jobs.c.attempts)
)
#: A republished message (see modelq.reconciler) starts its job only if nothing else did: its
#: original message may have turned up after all.
_MARK_RUNNING_IF_QUEUED = _MARK_RUNNING.where(jobs.c.status == JobStatus.QUEUED.value)
_MARK_SUCCEEDED = (
    update(jobs)
    .where(BY_ID, UNFINISHED)
    .values(
        status=JobStatus.SUCCEEDED.value,
        result=bindparam("result"),
        finished_at=bindparam("now"),
        progress=1.0,
        error=None,
    )
)
_MARK_FINISHED_WITH_ERROR = (
    update(jobs)
    .where(BY_ID, UNFINISHED)
    .values(
        status=bindparam("status"), error=bindparam("error"), failure=bindparam("failure"), finished_at=bindparam("now")
    )
)
_SET_PROGRESS = (
    update(jobs)
    .where(BY_ID, jobs.c.status == JobStatus.RUNNING.value)
    .values(progress=bindparam("fraction"), progress_message=bindparam("message"))
)
#: The order held jobs are released in: interactive (higher priority) first, then by fair tag.
_TURN = (func.coalesce(jobs.c.priority, 0).desc(), jobs.c.fair_tag, jobs.c.created_at)

#: A queue's released jobs whose messages are due, and whether any job of it is held.
_WINDOW = select(
    func.sum(case((RELEASED & (jobs.c.released_at <= bindparam("now")), 1), else_=0)),
    func.max(case((HELD, 1), else_=0)),
).where(QUEUED_IN)


_LAST_TAG = select(func.max(jobs.c.fair_tag)).where(QUEUED_IN, HELD, jobs.c.owner == bindparam("owner"))
_HEAD_TAG = select(func.min(jobs.c.fair_tag)).where(QUEUED_IN, HELD)
_locks = DispatchLock.__table__
_LOCK = update(_locks).where(_locks.c.key == bindparam("lock_key")).values(key=bindparam("lock_key"))
#: Jobs of a model (its queues match ``pattern``) running, or released with their messages due.
_MODEL_BUSY = select(func.count()).where(
    jobs.c.queue.like(bindparam("pattern")),
    or_(
        jobs.c.status == JobStatus.RUNNING.value,
        (jobs.c.status == JobStatus.QUEUED.value) & RELEASED & (jobs.c.released_at <= bindparam("now")),
    ),
)
_NEXT_HELD = select(jobs.c.id).where(QUEUED_IN, HELD).order_by(*_TURN).limit(bindparam("room"))
_MARK_RELEASED = (
    update(jobs)
    .where(jobs.c.id.in_(bindparam("ids", expanding=True)), QUEUED_IN, HELD)
    .values(released_at=bindparam("now"))
)
_RELEASED = (
    select(jobs.c.id, jobs.c.task, jobs.c.input, jobs.c.queue, jobs.c.priority, jobs.c.republished)
    .where(jobs.c.id.in_(bindparam("ids", expanding=True)), jobs.c.released_at == bindparam("now"))
    .order_by(*_TURN)
)


def _normalise_url(url: str) -> str:
    # Users write postgresql://; psycopg 3 is the driver we ship in the `postgres` extra.
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url[len("postgresql://") :]
    if url.startswith("postgres://"):
        return "postgresql+psycopg://" + url[len("postgres://") :]
    return url


class JobStore(JobReads, PlacementRecords, ReconcilerRecords):
    """Job records behind one small interface.

    The engine is created lazily and per process: a worker forks after the
    parent imported modelq, and a connection must never cross a fork.
    """

    def __init__(self, url: str, *, lock_dir: Path | None = None) -> None:
        self.url = _normalise_url(url)
        self._lock_dir = lock_dir
        self._engine: Engine | None = None
        self._pid = os.getpid()
        self._guard = threading.Lock()

    # Connection management ------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        if self._engine is None or self._pid != os.getpid():
            with self._guard:
                if self._engine is None or self._pid != os.getpid():
                    if self._engine is not None:
                        # A forked child never closes the connections it inherited: closing what
                        # looks to it like the last connection to a SQLite database in WAL mode
                        # checkpoints and deletes the -wal and -shm files under the parent's feet
                        # (other processes then find the database locked). They are kept, unused.
                        _INHERITED_ENGINES.append(self._engine)
                    self._engine = self._create_engine()
                    self._pid = os.getpid()
        return self._engine

    def _create_engine(self) -> Engine:
        if self.url.startswith("sqlite"):
            path = self.url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(self.url, connect_args={"timeout": 30, "check_same_thread": False})

            @event.listens_for(engine, "connect")
            def _sqlite_pragmas(dbapi_conn, _record):  # noqa: ANN001
                cur = dbapi_conn.cursor()
                # WAL lets the API read while workers write; NORMAL is durable across
                # process crashes, which is what a job store needs.
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
                cur.execute("PRAGMA busy_timeout=30000")
                cur.close()

            fork_guard.watch(engine)
            return engine
        return create_engine(self.url, pool_pre_ping=True, pool_size=5, max_overflow=10)

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (safe to call from many processes)."""
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", "modelq.jobs:migrations")
        with self._migration_lock(), self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(7270481)"))
            config.attributes["connection"] = conn
            command.upgrade(config, "head")

    @contextmanager
    def _migration_lock(self) -> Iterator[None]:
        if self._lock_dir is None:
            yield
            return
        self._lock_dir.mkdir(parents=True, exist_ok=True)
        with open(self._lock_dir / "migrate.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    # Writes -----------------------------------------------------------------------------

    def create(
        self, *, window: int | None = None, weight: float = 1.0, hold: bool = False, **fields: Any
    ) -> tuple[dict[str, Any], bool]:
        """Insert a job; with an idempotency key already used by this owner, return that job.

        Args:
            window: with a number, the job is *held* (recorded, its message not sent: see
                :mod:`modelq.jobs.dispatch`) when its queue already has ``window`` released jobs
                waiting or any held one; None releases it at once.
            weight: its owner's share weight, which spaces its held jobs' fair tags.
            hold: hold it whatever the window (a capped model: only a release counts the cap).

        Returns:
            (job, created): created is False when an existing job was returned; ``job["held"]``
            says whether its message waits for a release.
        """
        key = fields.get("idempotency_key")
        owner = fields.get("owner", "")
        if key:
            existing = self.find_idempotent(owner, key)
            if existing is not None:
                return existing, False
        now = utcnow()
        row = {
            "status": JobStatus.QUEUED.value,
            "created_at": now,
            "artifacts": [],
            "progress": 0.0,
            "progress_message": None,
            "priority": None,
            "worker": None,
            "runner": "worker",
            "attempts": 0,
            "started_at": None,
            "finished_at": None,
            "error": None,
            "result": None,
            "owner": "",
            "idempotency_key": None,
            "released_at": now,
            "fair_tag": None,
            **fields,
        }
        try:
            with self.transaction() as conn:
                if window is not None and (hold or self._must_hold(conn, row["queue"], window)):
                    row["released_at"] = None
                    row["fair_tag"] = self._fair_tag(conn, row["queue"], owner, weight)
                conn.execute(_INSERT, row)
        except IntegrityError:
            # Two submissions with one key raced; the other one won.
            existing = self.find_idempotent(owner, key) if key else None
            if existing is None:
                raise
            return existing, False
        return {**record_dict(row), "held": row["released_at"] is None}, True

    # Fair dispatch (see modelq.jobs.dispatch) -------------------------------------------

    @staticmethod
    def _must_hold(conn: Connection, queue: str, window: int) -> bool:
        """Whether a new job of ``queue`` waits its turn: the broker already has ``window`` of its jobs
        waiting, or some job of it is held (a newcomer never passes those)."""
        waiting, held = conn.execute(_WINDOW, {"in_queue": queue, "now": utcnow()}).one()
        return bool(held) or (waiting or 0) >= window

    @staticmethod
    def _fair_tag(conn: Connection, queue: str, owner: str, weight: float) -> float:
        """Start-time fair queuing over owners: a held job's tag is its owner's last held tag plus
        1 / weight; an owner with none held starts at the tag of the job next in line (and goes right
        after it), or at 0."""
        last = conn.execute(_LAST_TAG, {"in_queue": queue, "owner": owner}).scalar_one()
        if last is not None:
            return last + 1.0 / weight
        return conn.execute(_HEAD_TAG, {"in_queue": queue}).scalar_one() or 0.0

    def release(
        self, queue: str, *, window: int, cap: int | None = None, cap_model: str | None = None
    ) -> list[dict[str, Any]]:
        """Release the next held jobs of ``queue`` (interactive first, then by fair tag) while the broker
        has fewer than ``window`` of its jobs waiting, and, with a ``cap``, fewer than ``cap`` jobs of
        model ``cap_model`` are waiting there or running (in any queue). The caller publishes them.

        One release at a time per queue (per capped model): each takes its row of the dispatch locks
        first, so neither a window nor a cap is passed by two processes at once.

        Returns:
            What publishing each takes: id, task, input, queue, priority, republished.
        """
        key = f"model:{cap_model}" if cap is not None and cap_model else queue
        with self.transaction() as conn:
            self._lock(conn, key)
            now = utcnow()
            waiting, _ = conn.execute(_WINDOW, {"in_queue": queue, "now": now}).one()
            room = window - (waiting or 0)
            if cap is not None and cap_model:
                busy = conn.execute(_MODEL_BUSY, {"pattern": f"%.model.{cap_model}", "now": now}).scalar_one()
                room = min(room, cap - busy)
            if room <= 0:
                return []
            ids = conn.execute(_NEXT_HELD, {"in_queue": queue, "room": room}).scalars().all()
            if not ids:
                return []
            conn.execute(_MARK_RELEASED, {"in_queue": queue, "ids": ids, "now": now})
            rows = conn.execute(_RELEASED, {"ids": ids, "now": now}).mappings().all()
        return [dict(row) for row in rows]

    @staticmethod
    def _lock(conn: Connection, key: str) -> None:
        """Take ``key``'s row of the dispatch locks (created on first use) until the transaction ends."""
        if not conn.execute(_LOCK, {"lock_key": key}).rowcount:
            if conn.dialect.name == "postgresql":
                from sqlalchemy.dialects.postgresql import insert as upsert
            else:
                from sqlalchemy.dialects.sqlite import insert as upsert
            conn.execute(upsert(_locks).values(key=key).on_conflict_do_nothing())
            conn.execute(_LOCK, {"lock_key": key})

    def hold_again(self, job_id: str) -> None:
        """Put a released job back among the held ones (its message could not be sent)."""
        with self.transaction() as conn:
            conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.status == JobStatus.QUEUED.value)
                .values(released_at=None)
            )

    def held_queues(self) -> list[str]:
        """Queues with held jobs."""
        return sorted(self.held_counts())

    def window_state(self, queue: str) -> tuple[int, bool]:
        """(released jobs of ``queue`` whose messages are due, whether any of its jobs is held)."""
        with self.engine.connect() as conn:
            waiting, held = conn.execute(_WINDOW, {"in_queue": queue, "now": utcnow()}).one()
        return int(waiting or 0), bool(held)

    def mark_running(
        self,
        job_id: str,
        *,
        worker: str | None,
        task: str,
        queue: str,
        input: Any,
        runner: str = "worker",
        only_queued: bool = False,
        generation: int | None = None,
        quiet_since: datetime | None = None,
    ) -> int | None:
        """Record a delivery: status running, one more attempt.

        A message published without a record (plain ``task.delay()``) gets one here.

        Args:
            only_queued: start it only from ``queued`` (a republished message), not again while it runs.
            generation: the message's generation (the job's republish count when it was sent; None for a
                retry, which only a started run publishes): a message of an older one never starts the job.
            quiet_since: for a redelivered message, start a running job again only if its run's
                heartbeat is older than this (its process died); one still beating keeps it.

        Returns:
            The attempt number, or None when the job was cancelled (or already
            finished, or, with ``only_queued``, already started) and must not run.
        """
        now = utcnow()
        statement = _MARK_RUNNING_IF_QUEUED if only_queued else _MARK_RUNNING
        if generation is not None:
            statement = statement.where(jobs.c.republished == generation)
        if quiet_since is not None:
            statement = statement.where(or_(jobs.c.status == JobStatus.QUEUED.value, run_quiet_since(quiet_since)))
        with self.transaction() as conn:
            attempt = conn.execute(
                statement, {"job_id": job_id, "worker": worker, "runner": runner, "now": now}
            ).scalar_one_or_none()
            if attempt is not None:
                return int(attempt)
            if conn.execute(STATUS, {"job_id": job_id}).first() is not None:
                return None
            conn.execute(
                insert(jobs).values(
                    id=job_id,
                    task=task,
                    input=input,
                    queue=queue,
                    worker=worker,
                    runner=runner,
                    status=JobStatus.RUNNING.value,
                    attempts=1,
                    created_at=now,
                    started_at=now,
                    artifacts=[],
                    progress=0.0,
                    owner="",
                )
            )
            return 1

    def mark_handed_over(self, job_id: str) -> None:
        """Its task handed the running job over to later tasks (see modelq.tasks.JobContext.hand_over)."""
        with self.transaction() as conn:
            conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.status == JobStatus.RUNNING.value)
                .values(handed_over_at=utcnow())
            )

    def beat(self, job_ids: list[str]) -> None:
        """The heartbeat of running jobs: their process still runs them."""
        if not job_ids:
            return
        with self.transaction() as conn:
            conn.execute(
                update(jobs)
                .where(jobs.c.id.in_(job_ids), jobs.c.status == JobStatus.RUNNING.value)
                .values(heartbeat_at=utcnow())
            )

    def runs_elsewhere(self, job_id: str, beating_since: datetime) -> bool:
        """Whether the job runs and its run's heartbeat is newer than ``beating_since``."""
        with self.engine.connect() as conn:
            return (
                conn.execute(
                    select(jobs.c.id).where(
                        jobs.c.id == job_id,
                        jobs.c.status == JobStatus.RUNNING.value,
                        jobs.c.heartbeat_at >= beating_since,
                    )
                ).first()
                is not None
            )

    def mark_succeeded(self, job_id: str, result: Any) -> bool:
        with self.transaction() as conn:
            return bool(conn.execute(_MARK_SUCCEEDED, {"job_id": job_id, "result": result, "now": utcnow()}).rowcount)

    def mark_failed(self, job_id: str, error: str, failure: dict[str, Any] | None = None) -> bool:
        """Fail an unfinished job with ``error`` (one line) and, when an exception failed it, its
        structured ``failure`` (:func:`modelq.errors.failure_of`)."""
        return self._finish_with_error(job_id, JobStatus.FAILED, error, failure)

    def mark_failed_by(self, job_id: str, exc: BaseException, *, where: str | None = None) -> bool:
        """Fail an unfinished job with the exception that stopped it: its structured ``failure`` and
        the ``"Type: message"`` line, after ``where`` (the step that failed) when given."""
        failure = failure_of(exc)
        text = failure_text(failure)
        return self.mark_failed(job_id, f"{where}: {text}" if where else text, failure)

    def mark_retrying(self, job_id: str, error: str, due: datetime | None = None) -> bool:
        """Queue a job again for a retry whose message is due at ``due`` (now by default): until then
        it takes no room in its queue's window (see modelq.jobs.dispatch)."""
        with self.transaction() as conn:
            result = conn.execute(
                update(jobs)
                .where(BY_ID, UNFINISHED)
                .values(status=JobStatus.QUEUED.value, error=f"retrying after: {error}", released_at=due or utcnow()),
                {"job_id": job_id},
            )
            return bool(result.rowcount)

    def cancel(self, job_id: str, reason: str = "cancelled by request") -> bool:
        """Mark an unfinished job cancelled. Returns False when it had already finished."""
        return self._finish_with_error(job_id, JobStatus.CANCELLED, reason)

    def cancel_queued(self, queue: str, reason: str) -> int:
        with self.transaction() as conn:
            result = conn.execute(
                update(jobs)
                .where(jobs.c.queue == queue, jobs.c.status == JobStatus.QUEUED.value)
                .values(status=JobStatus.CANCELLED.value, error=reason, finished_at=utcnow())
            )
            return result.rowcount

    def set_progress(self, job_id: str, fraction: float, message: str | None) -> bool:
        """Update progress; returns False when the job is no longer running (cancelled)."""
        with self.transaction() as conn:
            result = conn.execute(_SET_PROGRESS, {"job_id": job_id, "fraction": fraction, "message": message})
            return bool(result.rowcount)

    def add_artifact(self, job_id: str, artifact: dict[str, Any]) -> None:
        with self.transaction() as conn:
            current = conn.execute(
                select(jobs.c.artifacts).where(jobs.c.id == job_id).with_for_update()
            ).scalar_one_or_none()
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(artifacts=[*(current or []), artifact]))

    def _finish_with_error(
        self, job_id: str, status: JobStatus, error: str, failure: dict[str, Any] | None = None
    ) -> bool:
        with self.transaction() as conn:
            params = {"job_id": job_id, "status": status.value, "error": error, "failure": failure, "now": utcnow()}
            return bool(conn.execute(_MARK_FINISHED_WITH_ERROR, params).rowcount)

    def delete(self, job_id: str) -> None:
        """Forget a job that was refused after it was recorded (its message never left)."""
        with self.transaction() as conn:
            conn.execute(jobs.delete().where(jobs.c.id == job_id))

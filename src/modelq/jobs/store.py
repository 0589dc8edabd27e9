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
from dataclasses import dataclass
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

from modelq.jobs.placement_records import PlacementRecords
from modelq.jobs.reconciler_records import ReconcilerRecords
from modelq.jobs.records import DispatchLock, Job, record_dict, utcnow
from modelq.jobs.records import aware as _aware
from modelq.jobs.status import JobStatus

#: The table, for Core statements: the hot paths (submit, start, finish, poll)
#: skip the ORM's unit of work, which costs more than the SQL itself here.
jobs = Job.__table__
#: Engines a forked process inherited from its parent: referenced so they are never closed here.
_INHERITED_ENGINES: list[Engine] = []

# Statements on the per-job path, built once: building a statement costs several
# times what SQLite takes to run it.
_unfinished = or_(jobs.c.status == JobStatus.QUEUED.value, jobs.c.status == JobStatus.RUNNING.value)
_by_id = jobs.c.id == bindparam("job_id")
_INSERT = insert(jobs)
_SELECT = select(jobs).where(_by_id)
_MARK_RUNNING = (
    update(jobs)
    .where(_by_id, _unfinished)
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
    .where(_by_id, _unfinished)
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
    .where(_by_id, _unfinished)
    .values(
        status=bindparam("status"), error=bindparam("error"), failure=bindparam("failure"), finished_at=bindparam("now")
    )
)
_SET_PROGRESS = (
    update(jobs)
    .where(_by_id, jobs.c.status == JobStatus.RUNNING.value)
    .values(progress=bindparam("fraction"), progress_message=bindparam("message"))
)
_STATUS = select(jobs.c.status).where(_by_id)
_held = jobs.c.released_at.is_(None)
_released = jobs.c.released_at.is_not(None)
#: The order held jobs are released in: interactive (higher priority) first, then by fair tag.
_TURN = (func.coalesce(jobs.c.priority, 0).desc(), jobs.c.fair_tag, jobs.c.created_at)


_QUEUED_IN = (jobs.c.status == JobStatus.QUEUED.value) & (jobs.c.queue == bindparam("in_queue"))
#: A queue's released jobs whose messages are due, and whether any job of it is held.
_WINDOW = select(
    func.sum(case((_released & (jobs.c.released_at <= bindparam("now")), 1), else_=0)),
    func.max(case((_held, 1), else_=0)),
).where(_QUEUED_IN)


_LAST_TAG = select(func.max(jobs.c.fair_tag)).where(_QUEUED_IN, _held, jobs.c.owner == bindparam("owner"))
_HEAD_TAG = select(func.min(jobs.c.fair_tag)).where(_QUEUED_IN, _held)
_locks = DispatchLock.__table__
_LOCK = update(_locks).where(_locks.c.key == bindparam("lock_key")).values(key=bindparam("lock_key"))
#: Jobs of a model (its queues match ``pattern``) running, or released with their messages due.
_MODEL_BUSY = select(func.count()).where(
    jobs.c.queue.like(bindparam("pattern")),
    or_(
        jobs.c.status == JobStatus.RUNNING.value,
        (jobs.c.status == JobStatus.QUEUED.value) & _released & (jobs.c.released_at <= bindparam("now")),
    ),
)
_NEXT_HELD = select(jobs.c.id).where(_QUEUED_IN, _held).order_by(*_TURN).limit(bindparam("room"))
_MARK_RELEASED = (
    update(jobs)
    .where(jobs.c.id.in_(bindparam("ids", expanding=True)), _QUEUED_IN, _held)
    .values(released_at=bindparam("now"))
)
_RELEASED = (
    select(jobs.c.id, jobs.c.task, jobs.c.input, jobs.c.queue, jobs.c.priority, jobs.c.republished)
    .where(jobs.c.id.in_(bindparam("ids", expanding=True)), jobs.c.released_at == bindparam("now"))
    .order_by(*_TURN)
)
_OWNER = select(jobs.c.owner).where(_by_id)


def _normalise_url(url: str) -> str:
    # Users write postgresql://; psycopg 3 is the driver we ship in the `postgres` extra.
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url[len("postgresql://") :]
    if url.startswith("postgres://"):
        return "postgresql+psycopg://" + url[len("postgres://") :]
    return url


@dataclass(frozen=True)
class JobPage:
    jobs: list[dict[str, Any]]
    total: int


class JobStore(PlacementRecords, ReconcilerRecords):
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
            statement = statement.where(
                or_(
                    jobs.c.status == JobStatus.QUEUED.value,
                    jobs.c.heartbeat_at.is_(None),
                    jobs.c.heartbeat_at < quiet_since,
                )
            )
        with self.transaction() as conn:
            attempt = conn.execute(
                statement, {"job_id": job_id, "worker": worker, "runner": runner, "now": now}
            ).scalar_one_or_none()
            if attempt is not None:
                return int(attempt)
            if conn.execute(_STATUS, {"job_id": job_id}).first() is not None:
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

    def mark_retrying(self, job_id: str, error: str, due: datetime | None = None) -> bool:
        """Queue a job again for a retry whose message is due at ``due`` (now by default): until then
        it takes no room in its queue's window (see modelq.jobs.dispatch)."""
        with self.transaction() as conn:
            result = conn.execute(
                update(jobs)
                .where(_by_id, _unfinished)
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

    # Reads ------------------------------------------------------------------------------

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
            return conn.execute(_STATUS, {"job_id": job_id}).scalar_one_or_none()

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
                conn.execute(select(*light).where(_unfinished).order_by(jobs.c.created_at).limit(limit))
                .mappings()
                .all()
            )
            recent = (
                conn.execute(
                    select(*light)
                    .where(~_unfinished, or_(jobs.c.finished_at >= since, jobs.c.created_at >= since))
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
            before = _QUEUED_IN & _released & (jobs.c.released_at < row["released_at"])
        else:
            priority, tag = row["priority"] or 0, row["fair_tag"] or 0.0
            earlier = or_(
                func.coalesce(jobs.c.priority, 0) > priority,
                (func.coalesce(jobs.c.priority, 0) == priority)
                & or_(jobs.c.fair_tag < tag, (jobs.c.fair_tag == tag) & (jobs.c.created_at < row["created_at"])),
            )
            before = _QUEUED_IN & or_(_released, _held & earlier)
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

    def delete(self, job_id: str) -> None:
        """Forget a job that was refused after it was recorded (its message never left)."""
        with self.transaction() as conn:
            conn.execute(jobs.delete().where(jobs.c.id == job_id))

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
        query = select(jobs.c.owner, jobs.c.status, _held, func.count()).where(_unfinished)
        if owner is not None:
            query = query.where(jobs.c.owner == owner)
        with self.engine.connect() as conn:
            rows = conn.execute(query.group_by(jobs.c.owner, jobs.c.status, _held)).all()
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
                .where(jobs.c.status == JobStatus.QUEUED.value, _held)
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

"""Scenario ``chaos`` (target R1): submit jobs while killing workers and the broker; count what is lost.

One embedded Redis under a fresh temporary home, two ``modelq worker --pool prefork -c 2``
processes on the ``default`` queue (and a threads-pool worker on ``io``, which runs the reconciler), and this process submitting ``bench.chaos_work`` jobs (0.5 s
of "work" each, :mod:`modelq.bench.chaos_tasks`) through the in-process client at a steady pace.
At fixed points of the stream, each once every worker answers a ping again, it

* **kills a pool process** running a job (SIGKILL; the worker's parent replaces it);
* **starts a long job** (45 s) that is still running when the broker comes back, so its lease
  has to survive the outage;
* **kills the broker** (SIGKILL to redis-server), goes on submitting (submissions are refused
  while it is down, and sent again later), then restarts it from its append-only file
  (``EmbeddedRedis.ensure_running()``) after ``OUTAGE_SECONDS`` or the first refusal, whichever
  ends later;
* **kills a whole worker** (SIGKILL to its process group) while all its pool processes run
  jobs, then starts it again;
* **takes a message off the queue** and drops it, as a worker killed between Redis handing it the
  message (``BRPOP``) and kombu recording it would (the BRPOP window);
* **flushes the broker** (``FLUSHDB`` of its database: every waiting message, the unacknowledged
  ones and the queues' bindings are gone), as a Redis without persistence that restarted would;
* **wipes the broker** (the full plan): kills it as above with a long job running, and restarts
  it without its append-only file, a Redis without persistence that really restarted.

The last three lose messages for good: the reconciler (:mod:`modelq.reconciler`, grace 3 s, a pass
a second here) must publish their jobs again.

Workers run with a visibility timeout of 6 s, so a dead worker's jobs come back within seconds.
Then it waits, up to a deadline, for every accepted job to finish, stops the workers (warm
shutdown: running bodies end) and reads the job store and the task's log.

Figures:

* ``submitted``: submissions accepted (a job record and a published message); ``refused``:
  submissions refused with ``BrokerUnavailable`` while the broker was down (each is sent again
  later); ``refused_after_seconds``: the longest a refusal took.
* ``succeeded``, ``failed``: accepted jobs whose record ended so (``failed`` includes cancelled).
* ``lost``: accepted jobs whose record is gone or still unfinished at the deadline
  (``lost_jobs`` lists them with their status).
* ``duplicated_concurrently``: accepted jobs with two runs of their body that overlapped in
  time. A run is the interval from its "start" line to its "end" line in the task's log. A run
  with no "end" was killed by this scenario: its end is the moment its process was known to be
  dead (taken after the SIGKILL and the wait for the process), so a redelivery that starts after
  the kill does not overlap it. A run with no end that no kill explains counts as running until
  the end of time (``unexplained_open_runs``), so it cannot hide an overlap.
* ``ran_more_than_once`` (body started twice or more, e.g. once killed, once to completion) and
  ``completed_more_than_once`` (body ran to its end twice) are reported beside, as are
  ``max_attempts`` (the highest ``attempts`` of a record), ``worker_kills`` (pool processes and
  whole workers), ``worker_exits`` (workers that ended without being killed: a bug),
  ``broker_restarts``, ``broker_wipes`` (restarts without the append-only file),
  ``broker_down_seconds``, ``messages_taken``, ``broker_flushes``,
  ``republished`` (jobs the reconciler published again) and ``wall_seconds``.

Targets: ``lost == 0`` and ``duplicated_concurrently == 0``. Figures are reported, never asserted here.

A whole worker is killed while all its processes are busy on purpose: an idle or half-idle
worker may have a message that Redis has already handed over (``BRPOP``) but kombu has not yet
recorded as unacknowledged, and killing it then loses that job (a window of kombu's Redis
transport, not of modelq's, that no lease can cover).
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelq.bench import BenchError
from modelq.bench.chaos_figures import analyse, report
from modelq.bench.chaos_plan import (
    BUSY_TIMEOUT,
    CONCURRENCY,
    FULL_PLAN,
    JOB_SECONDS,
    LONG_JOB_SECONDS,
    OUTAGE_SECONDS,
    PACE,
    QUICK_PLAN,
    RECONCILE_GRACE,
    RECONCILE_INTERVAL,
    RUN_HEARTBEAT_INTERVAL,
    SETTLE_TIMEOUT,
    VISIBILITY_TIMEOUT,
    WORKERS,
)
from modelq.bench.chaos_tasks import TASK, read_log, running, runs
from modelq.bench.report import Report
from modelq.bench.support import (
    Child,
    child_env,
    descendants,
    hermetic_settings,
    kill_leftovers,
    process,
    release_results,
    still_running,
    wait_until,
)
from modelq.testing import worker_command


def run(*, settings: Any = None, quick: bool = False, say: Callable[[str], None] = lambda _m: None) -> Report:
    """Measure; returns the report (see the module docstring)."""
    n_jobs = 60 if quick else 200
    plan = QUICK_PLAN if quick else FULL_PLAN
    with ExitStack() as stack:
        home = Path(tempfile.mkdtemp(prefix="modelq-bench-chaos-"))
        stack.callback(shutil.rmtree, home, ignore_errors=True)
        losing = any(event in ("take_message", "flush_broker", "wipe_broker") for _, event in plan)
        chaos = Chaos(stack, home, say, max_deliveries=len(plan) + 2, reconcile=losing)
        started = time.monotonic()
        chaos.submit(n_jobs, plan)
        say(f"{len(chaos.accepted)} jobs accepted ({chaos.refused} submissions refused); waiting for them")
        records = chaos.wait_all(timeout=LONG_JOB_SECONDS + (90.0 if quick else 240.0))
        wall = time.monotonic() - started
        say("stopping the workers (warm shutdown) and reading the log")
        chaos.stop_workers()
        figures = analyse(chaos.accepted, records, runs(read_log(chaos.log), chaos.kills))

    def count(*names: str) -> int:
        return sum(1 for e in chaos.events if e["event"] in names)

    figures.update(
        jobs=n_jobs,
        refused=chaos.refused,
        refused_after_seconds=round(max(chaos.refusals, default=0.0), 2),
        worker_kills=count("kill_child", "kill_worker"),
        broker_restarts=count("restart_broker"),
        broker_wipes=count("wipe_broker"),
        messages_taken=count("take_message"),
        broker_flushes=count("flush_broker"),
        republished=sum(1 for record in records.values() if record and record.get("republished")),
        broker_down_seconds=round(max(chaos.down_seconds, default=0.0), 2),
        worker_exits=count("worker_exited"),
        wall_seconds=round(wall, 2),
        events=chaos.events,
    )
    return report(figures)


@dataclass
class Chaos:
    """The broker, the workers, the client, and what was done to them."""

    stack: ExitStack
    home: Path
    say: Callable[[str], None]
    max_deliveries: int
    #: Start a threads-pool watcher that runs the reconciler (the plans that lose messages for good).
    reconcile: bool = False
    #: The broker now down comes back without its append-only file.
    wipe: bool = False
    accepted: list[str] = field(default_factory=list)
    long_jobs: list[str] = field(default_factory=list)
    refused: int = 0
    #: Seconds each refused submission took to be refused, and each broker outage lasted.
    refusals: list[float] = field(default_factory=list)
    down_seconds: list[float] = field(default_factory=list)
    #: (pid, time.time() when it was known dead) for every process this scenario killed.
    kills: list[tuple[int, float]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        from modelq.broker import EmbeddedRedis
        from modelq.celery_app import create_celery_app
        from modelq.client import Client

        self.log = self.home / "runs.jsonl"
        self.t0 = time.time()
        self.say(f"starting the embedded Redis under {self.home}")
        self.broker = EmbeddedRedis(self.home)
        self.broker.ensure_running()
        self.stack.callback(self.broker.stop)
        self.env = child_env(
            self.home,
            MODELQ_IMPORTS="modelq.bench.chaos_tasks",
            MODELQ_VISIBILITY_TIMEOUT=str(VISIBILITY_TIMEOUT),
            # No job can reach this through the scenario's kills alone: a job that fails is a finding.
            MODELQ_MAX_DELIVERIES=str(self.max_deliveries),
            MODELQ_RECONCILE_GRACE=str(RECONCILE_GRACE),
            MODELQ_RECONCILE_INTERVAL=str(RECONCILE_INTERVAL),
            MODELQ_RUN_HEARTBEAT_INTERVAL=str(RUN_HEARTBEAT_INTERVAL),
        )
        settings = hermetic_settings(self.home, {k: v for k, v in self.env.items() if k.startswith("MODELQ_")})
        self.app = create_celery_app(settings)
        self.stack.callback(release_results, self.app)
        self.store = self.app.modelq.store  # migrated before the workers start
        self.client = Client.in_process(app=self.app)
        self.workers: list[Child] = []
        self.trees: list[list[tuple[int, int]]] = [[] for _ in range(WORKERS)]
        self.stack.callback(self._kill_all)
        self.say(f"starting {WORKERS} workers (prefork, {CONCURRENCY} processes each) and a threads-pool watcher")
        self.workers = [self._spawn(i) for i in range(WORKERS)]
        # As `modelq up` has one: the reconciler runs in a threads-pool worker (a prefork parent over
        # a SQLite store does not run it). It reads only the io queue, and no fault touches it.
        if not self.reconcile:
            self._settle()
            return
        watcher = Child(
            "chaos-watch@modelq-bench",
            worker_command("io", "chaos-watch@modelq-bench", pool="threads", concurrency=1),
            env=self.env,
            cwd=self.home,
            log=self.home / "watcher.log",
        )
        self.stack.callback(watcher.stop)
        self._settle()

    # Workers ---------------------------------------------------------------------------

    def _name(self, i: int) -> str:
        return f"chaos-{i}@modelq-bench"

    def _spawn(self, i: int) -> Child:
        return Child(
            self._name(i),
            worker_command("default", self._name(i), pool="prefork", concurrency=CONCURRENCY),
            env=self.env,
            cwd=self.home,
            log=self.home / f"worker-{i}.log",
        )

    def _settle(self) -> None:
        """Wait until every worker answers a ping (after a restart of it or of the broker)."""
        for i in range(WORKERS):
            name = self._name(i)

            def answered(name: str = name) -> bool:
                self._restart_exited_workers()
                try:
                    replies = self.app.control.ping(destination=[name], timeout=0.5) or []
                except Exception:  # noqa: BLE001 - this process's connection may still be finding the restarted broker
                    return False
                return any(name in reply for reply in replies)

            wait_until(answered, timeout=SETTLE_TIMEOUT, what=f"{name} to answer a ping", interval=0.1)
            self.trees[i] += descendants(self.workers[i].pid)

    def _restart_exited_workers(self) -> None:
        """A worker that exited without being killed is a finding: note it, and start it again."""
        for i, worker in enumerate(self.workers):
            if not worker.alive():
                self._event(
                    "worker_exited", worker=self._name(i), code=worker.proc.returncode, log=worker.log_tail(300)
                )
                self.workers[i] = self._spawn(i)

    def _busy(self, i: int) -> list[str]:
        """Jobs whose body runs in worker ``i`` now."""
        now = running(read_log(self.log))
        return [now[pid] for pid, _ in descendants(self.workers[i].pid) if pid in now]

    def stop_workers(self) -> None:
        for i, worker in enumerate(self.workers):
            self.trees[i] += descendants(worker.pid)
            worker.stop(signal.SIGTERM, timeout=30)
            kill_leftovers(self.trees[i])

    def _kill_all(self) -> None:
        for i, worker in enumerate(self.workers):
            self.trees[i] += descendants(worker.pid)
            worker.kill()
            kill_leftovers(self.trees[i])

    # Submitting, with chaos --------------------------------------------------------------

    def submit(self, n_jobs: int, plan: list[tuple[int, str]]) -> None:
        """Submit ``n_jobs``, one every ``PACE`` seconds, doing each event of ``plan`` on its turn."""
        todo = list(plan)
        outage_until: float | None = None
        say_every = max(1, n_jobs // 5)
        while len(self.accepted) < n_jobs + len(self.long_jobs) or outage_until is not None:
            if outage_until is not None and time.monotonic() >= outage_until:
                self._broker_up()
                outage_until = None
            if outage_until is None:
                self._restart_exited_workers()
            while todo and todo[0][0] <= len(self.accepted) - len(self.long_jobs) and outage_until is None:
                _, event = todo.pop(0)
                self._settle()
                if event in ("kill_broker", "wipe_broker"):
                    self._broker_down(wipe=event == "wipe_broker")
                    outage_until = time.monotonic() + OUTAGE_SECONDS
                else:
                    getattr(self, f"_{event}")(sum(1 for e in self.events if e["event"] == event))
            if len(self.accepted) - len(self.long_jobs) < n_jobs and self._submit(JOB_SECONDS) is not None:
                if len(self.accepted) % say_every == 0:
                    self.say(f"{len(self.accepted)} jobs accepted")
            time.sleep(PACE)

    def _submit(self, seconds: float) -> str | None:
        """Submit one job; its id, or None when the broker refused it (counted, not accepted)."""
        from modelq.errors import BrokerUnavailable

        asked = time.monotonic()
        try:
            job = self.client.submit(TASK, {"log": str(self.log), "seconds": seconds})
        except BrokerUnavailable:
            self.refused += 1
            self.refusals.append(time.monotonic() - asked)
            return None
        self.accepted.append(job["id"])
        return job["id"]

    def _event(self, event: str, **detail: Any) -> None:
        self.events.append({"event": event, "at": round(time.time() - self.t0, 2), **detail})
        self.say(f"{event}: {detail}")

    def _long_job(self, nth: int) -> None:
        """Submit a job that outlasts the next broker outage, and wait for it to start."""
        job_id = wait_until(lambda: self._submit(LONG_JOB_SECONDS), timeout=SETTLE_TIMEOUT, what="a long job accepted")
        self.long_jobs.append(job_id)
        wait_until(
            lambda: job_id in running(read_log(self.log)).values(),
            timeout=SETTLE_TIMEOUT,
            what=f"long job {job_id} to start",
        )
        self._event("long_job", job=job_id, seconds=LONG_JOB_SECONDS)

    def _kill_child(self, nth: int) -> None:
        """SIGKILL a pool process that is running a short job (its worker starts another one)."""

        def victim() -> tuple[int, int, int] | None:
            now = running(read_log(self.log))
            for i, worker in enumerate(self.workers):
                for pid, started in descendants(worker.pid):
                    if pid in now and now[pid] not in self.long_jobs:
                        return i, pid, started
            return None

        i, pid, started = wait_until(victim, timeout=BUSY_TIMEOUT, what="a pool process running a job")
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not still_running([(pid, started)]), timeout=10, what=f"pool process {pid} to die")
        self.kills.append((pid, time.time()))
        self._event("kill_child", worker=self._name(i), pid=pid)

    def _kill_worker(self, nth: int) -> None:
        """SIGKILL a whole worker (its process group) while all its processes run short jobs; start it again."""

        def full(i: int) -> bool:
            busy = self._busy(i)
            return len(busy) == CONCURRENCY and not set(busy) & set(self.long_jobs)

        order = [(nth + k) % WORKERS for k in range(WORKERS)]
        try:
            i = wait_until(
                lambda: [j for j in order if full(j)], timeout=BUSY_TIMEOUT, what="a worker with every process busy"
            )[0]
        except BenchError:
            i = order[0]  # reported: at_capacity is False
        worker = self.workers[i]
        tree = [(worker.pid, 0), *descendants(worker.pid)]
        busy = self._busy(i)
        worker.kill()
        kill_leftovers(tree[1:])
        wait_until(lambda: not still_running(tree[1:]), timeout=10, what=f"{self._name(i)} to die")
        dead_at = time.time()
        self.kills += [(pid, dead_at) for pid, _ in tree]
        self._event(
            "kill_worker",
            worker=self._name(i),
            processes=len(tree),
            running_jobs=len(busy),
            at_capacity=len(busy) == CONCURRENCY,
        )
        self.workers[i] = self._spawn(i)

    def _take_message(self, nth: int) -> None:
        """Take a waiting message off the queue and drop it (the BRPOP window: its taker died)."""
        import json

        def take() -> str | None:
            with self.app.connection_for_write() as conn:
                raw = conn.default_channel.client.rpop("default")  # kombu pushes left, pops right
            return json.loads(raw)["headers"]["id"] if raw else None

        try:
            job_id = wait_until(take, timeout=2.0, what="a message waiting in the queue", interval=0.01)
        except BenchError:  # the workers keep up with the pace: a burst leaves some waiting
            for _ in range(2 * WORKERS * CONCURRENCY + 1):
                self._submit(JOB_SECONDS)
            job_id = wait_until(take, timeout=BUSY_TIMEOUT, what="a message waiting in the queue", interval=0.01)
        self._event("take_message", job=job_id)

    def _flush_broker(self, nth: int) -> None:
        """FLUSHDB the broker's database: waiting and unacknowledged messages and bindings, all gone."""
        queued = self.store.counts().get("queued", 0)
        with self.app.connection_for_write() as conn:
            conn.default_channel.client.flushdb()
        # The queue's binding went too: until the reconciler declares it again (its first republish),
        # what this process publishes is dropped, and those jobs come back through the reconciler as well.
        self._event("flush_broker", queued_jobs=queued)

    def _broker_down(self, *, wipe: bool = False) -> None:
        """SIGKILL redis-server while a worker has a job running and a process free.

        A free process means its worker is waiting on the broker for the next message, the
        moment a lost connection is hardest on a worker. With ``wipe``, it comes back without its
        append-only file: a Redis without persistence that restarted, with every waiting and
        unacknowledged message and every queue binding gone.
        """
        try:
            i = wait_until(
                lambda: [j for j in range(WORKERS) if 0 < len(self._busy(j)) < CONCURRENCY],
                timeout=BUSY_TIMEOUT,
                what="a worker with a job running and a process free",
            )[0]
        except BenchError:
            i = None  # reported: waiting_worker is None
        pid = self.broker.pid()
        server = process(pid) if pid is not None else None
        if server is None:
            raise BenchError(f"the embedded broker under {self.home} is not running")
        os.kill(pid, signal.SIGKILL)
        # Not ``broker.ping()``: against a dead server, redis-py retries for seconds before it says no.
        wait_until(lambda: not still_running([server]), timeout=10, what="the broker to die")
        self.down_since = time.monotonic()
        self.wipe = wipe
        self._event(
            "wipe_broker" if wipe else "kill_broker",
            pid=pid,
            running_jobs=sum(len(self._busy(j)) for j in range(WORKERS)),
            waiting_worker=None if i is None else self._name(i),
        )

    def _broker_up(self) -> None:
        if self.wipe:
            for stale in [
                self.broker.dir / "appendonlydir",
                *self.broker.dir.glob("*.aof"),
                *self.broker.dir.glob("*.rdb"),
            ]:
                if stale.is_dir():
                    shutil.rmtree(stale)
                else:
                    stale.unlink(missing_ok=True)
        self.broker.ensure_running()
        self.down_seconds.append(time.monotonic() - self.down_since)
        self._event("restart_broker", pid=self.broker.pid(), down_seconds=round(self.down_seconds[-1], 2))

    # Waiting -----------------------------------------------------------------------------

    def wait_all(self, timeout: float) -> dict[str, dict[str, Any] | None]:
        """Poll the job store until every accepted job has finished (or ``timeout``); their records."""
        records: dict[str, dict[str, Any] | None] = {}
        unfinished = list(self.accepted)
        deadline = time.monotonic() + timeout
        while unfinished:
            self._restart_exited_workers()
            for job_id in unfinished:
                records[job_id] = self.store.get(job_id, with_position=False)
            unfinished = [j for j in unfinished if (records[j] or {}).get("status") in ("queued", "running")]
            if not unfinished or time.monotonic() >= deadline:
                break
            time.sleep(0.25)
        if unfinished:
            self.say(f"{len(unfinished)} jobs unfinished after {timeout:g}s")
        return records

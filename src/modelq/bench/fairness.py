"""Scenario ``fairness`` (target F1): fair share between owners, and interactive jobs before batch.

One embedded Redis and one job store under a fresh temporary home. Each side starts two workers
(``modelq worker -Q default --pool threads -c 4``: 8 slots, one warm model each) that run
``bench.cluster_job`` (:mod:`modelq.bench.cluster_tasks`): a job holds the model for J seconds
with the CPU free, like an accelerator at work (J = 0.2 s; quick: 0.05 s).

* **owners**, on both sides: owner A submits a burst of N jobs (500; quick 200); one second after
  A's first (quick: 0.2 s), owner B submits 10 jobs at once. Reported: B's p50 and p95 wait (start - submit), in
  seconds and in units of one job's measured service time, and A's burst time (its first submit to
  its last finish). **fair** is modelq's dispatch (``dispatch_window`` 4, equal weights); **fifo**
  is the same workers with a window larger than the burst: every message goes to the broker at
  once, which serves it first in, first out, as plain Celery does.
* **interactive** (fair side): requests submitted with ``priority="interactive"``, one every
  0.25 s, first on the idle workers, then while a batch of N jobs runs; and the batch alone.
  Reported: the requests' p50/p95 latency (submit to finish) in both cases, and the batch's time
  with and without them.

Targets: B's p95 wait <= 3 service times (fair); interactive p95 latency <= 2x the idle system's;
the batch's time with interactive requests <= 1.1x alone.
"""

from __future__ import annotations

import json
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from modelq.bench import BenchError
from modelq.bench.report import Panel, Report, fmt, verdict
from modelq.bench.support import Child, child_env, hermetic_settings, percentile, release_results, wait_for_pings
from modelq.testing import worker_command

TASK = "bench.cluster_job"
WORKERS, THREADS = 2, 4
#: A window no burst fills: every message goes to the broker when it is submitted (first in, first out).
FIFO_WINDOW = 1_000_000
OWNER_B_JOBS = 10
INTERACTIVE_INTERVAL = 0.25
TARGET = {
    "owner_b_p95_wait_in_service_times_max": 3.0,
    "interactive_p95_vs_idle_max": 2.0,
    "batch_with_interactive_vs_alone_max": 1.1,
}
WORKER_START_TIMEOUT = 120.0


@dataclass(frozen=True)
class Plan:
    burst: int
    job_seconds: float
    idle_requests: int
    #: Seconds after owner A's first submission that owner B submits (well inside A's burst).
    owner_b_delay: float


def plan_for(quick: bool) -> Plan:
    if quick:
        return Plan(burst=200, job_seconds=0.05, idle_requests=12, owner_b_delay=0.2)
    return Plan(burst=500, job_seconds=0.2, idle_requests=40, owner_b_delay=1.0)


class Side:
    """One side's app (its submitter uses the side's window) and workers, over the shared broker and store."""

    def __init__(self, stack: ExitStack, home: Path, name: str, window: int | None, say: Callable[[str], None]) -> None:
        from modelq.bench import cluster_tasks
        from modelq.celery_app import create_celery_app
        from modelq.jobs.service import JobService

        declared = {"loader": cluster_tasks.LOADER, "keep_alive": -1, "options": {"load_seconds": 0.5}}
        env = {"MODELQ_IMPORTS": cluster_tasks.__name__, "MODELQ_MODELS": json.dumps({"m0": declared})}
        if window is not None:
            env["MODELQ_DISPATCH_WINDOW"] = str(window)
        self.app = create_celery_app(hermetic_settings(home, env), start_broker=True)
        stack.callback(release_results, self.app)
        self.service = JobService(self.app)
        hostnames = [f"fair-{name}-w{i}@modelq-bench" for i in range(WORKERS)]
        self.children = []
        for hostname in hostnames:
            child = Child(
                f"modelq worker {hostname}",
                worker_command("default", hostname, pool="threads", concurrency=THREADS),
                env=child_env(home, **env),
                cwd=home,
                log=home / "logs" / f"{hostname.partition('@')[0]}.log",
            )
            stack.callback(child.stop)
            self.children.append(child)
        say(f"{name}: waiting for {WORKERS} workers to answer a ping")
        wait_for_pings(self.app, hostnames, timeout=WORKER_START_TIMEOUT, check=self.check)

    def check(self) -> None:
        for child in self.children:
            child.ensure_alive()

    def submit(self, owner: str, job_seconds: float, priority: str | None = None) -> str:
        return self.service.submit(TASK, {"model": "m0", "job_seconds": job_seconds}, owner=owner, priority=priority)[
            "id"
        ]

    def collect(self, job_ids: list[str], timeout: float) -> list[dict[str, Any]]:
        """Every job's record once finished (each must have succeeded), with its owner."""
        from modelq.errors import JobTimeout

        deadline, records = time.monotonic() + timeout, []
        for job_id in job_ids:
            while True:
                self.check()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BenchError(f"timed out after {timeout:g}s waiting for job {job_id}")
                try:
                    record = self.service.wait(job_id, timeout=min(5.0, remaining))
                    break
                except JobTimeout:
                    continue
            if record["status"] != "succeeded":
                raise BenchError(f"job {job_id} {record['status']}: {record.get('error')}")
            records.append(record)
        return records

    def warm(self, plan: Plan) -> None:
        """Load the model on both workers before anything is measured (a load is not what this shows)."""
        self.collect([self.submit("warm-up", plan.job_seconds) for _ in range(2 * WORKERS * THREADS)], timeout=120)


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value)


def waits(records: list[dict[str, Any]]) -> list[float]:
    return [(_at(r["started_at"]) - _at(r["created_at"])).total_seconds() for r in records]


def latencies(records: list[dict[str, Any]]) -> list[float]:
    return [(_at(r["finished_at"]) - _at(r["created_at"])).total_seconds() for r in records]


def span(records: list[dict[str, Any]]) -> float:
    """First submit to last finish."""
    return (max(_at(r["finished_at"]) for r in records) - min(_at(r["created_at"]) for r in records)).total_seconds()


def in_background(work: Callable[[], list[str]]) -> Callable[[], list[str]]:
    """Run ``work`` in a thread now; the returned call waits for it and gives its job ids."""
    out: list[list[str]] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            out.append(work())
        except BaseException as exc:  # surfaced by the join below
            errors.append(exc)

    thread = threading.Thread(target=target, name="modelq-bench-burst", daemon=True)
    thread.start()

    def join() -> list[str]:
        thread.join()
        if errors:
            raise errors[0]
        return out[0]

    return join


def timeout_for(plan: Plan, jobs: int) -> float:
    return 120.0 + 4 * jobs * plan.job_seconds / (WORKERS * THREADS)


def owners_run(side: Side, plan: Plan, say: Callable[[str], None], name: str) -> dict[str, Any]:
    """Owner A's burst; owner B's 10 jobs one second after A's first."""
    say(
        f"{name}: owner A submits {plan.burst} jobs; owner B submits {OWNER_B_JOBS}, {plan.owner_b_delay:g} s after A's first"
    )
    started = time.monotonic()
    burst = in_background(lambda: [side.submit("owner-a", plan.job_seconds) for _ in range(plan.burst)])
    time.sleep(max(started + plan.owner_b_delay - time.monotonic(), 0.0))  # B's submissions are due then
    owner_b = [side.submit("owner-b", plan.job_seconds) for _ in range(OWNER_B_JOBS)]
    a_ids = burst()
    a_records = side.collect(a_ids, timeout_for(plan, plan.burst))
    b_records = side.collect(owner_b, timeout_for(plan, plan.burst))
    service = statistics.median((_at(r["finished_at"]) - _at(r["started_at"])).total_seconds() for r in a_records)
    b_waits = waits(b_records)
    figures = {
        "service_time_s": round(service, 4),
        "owner_b_wait_p50_s": round(percentile(b_waits, 50), 3),
        "owner_b_wait_p95_s": round(percentile(b_waits, 95), 3),
        "owner_b_wait_max_s": round(max(b_waits), 3),
        "owner_a_burst_s": round(span(a_records), 3),
    }
    figures["owner_b_p95_wait_in_service_times"] = round(figures["owner_b_wait_p95_s"] / service, 3)
    say(
        f"  B waited p50 {figures['owner_b_wait_p50_s']:.2f} s, p95 {figures['owner_b_wait_p95_s']:.2f} s "
        f"({figures['owner_b_p95_wait_in_service_times']:.1f} service times); A's burst took {figures['owner_a_burst_s']:.1f} s"
    )
    return figures


def interactive_requests(side: Side, plan: Plan, count: int) -> list[str]:
    """``count`` interactive requests, one every INTERACTIVE_INTERVAL seconds."""
    job_ids, started = [], time.monotonic()
    for i in range(count):
        time.sleep(max(started + i * INTERACTIVE_INTERVAL - time.monotonic(), 0.0))  # pacing arrivals to a schedule
        job_ids.append(side.submit("interactive", plan.job_seconds, priority="interactive"))
    return job_ids


def interactive_run(side: Side, plan: Plan, say: Callable[[str], None]) -> dict[str, Any]:
    """Interactive requests on idle workers, a batch alone, then the batch with interactive requests."""
    say(f"interactive: {plan.idle_requests} requests on idle workers")
    idle = latencies(side.collect(interactive_requests(side, plan, plan.idle_requests), timeout=120))
    say(f"interactive: a batch of {plan.burst} alone")
    alone = span(
        side.collect([side.submit("batch", plan.job_seconds) for _ in range(plan.burst)], timeout_for(plan, plan.burst))
    )
    say(f"interactive: a batch of {plan.burst} with requests arriving every {INTERACTIVE_INTERVAL:g} s")
    burst = in_background(lambda: [side.submit("batch", plan.job_seconds) for _ in range(plan.burst)])
    expected = plan.burst * plan.job_seconds / (WORKERS * THREADS)
    requests = interactive_requests(side, plan, max(int(expected * 0.8 / INTERACTIVE_INTERVAL), 4))
    batch = side.collect(burst(), timeout_for(plan, plan.burst))
    loaded = latencies(side.collect(requests, timeout_for(plan, plan.burst)))
    figures = {
        "idle_p50_s": round(percentile(idle, 50), 3),
        "idle_p95_s": round(percentile(idle, 95), 3),
        "loaded_p50_s": round(percentile(loaded, 50), 3),
        "loaded_p95_s": round(percentile(loaded, 95), 3),
        "requests_loaded": len(loaded),
        "batch_alone_s": round(alone, 3),
        "batch_with_interactive_s": round(span(batch), 3),
    }
    figures["interactive_p95_vs_idle"] = round(figures["loaded_p95_s"] / figures["idle_p95_s"], 3)
    figures["batch_with_interactive_vs_alone"] = round(figures["batch_with_interactive_s"] / alone, 4)
    say(
        f"  interactive p95 {figures['loaded_p95_s']:.2f} s under the batch, {figures['idle_p95_s']:.2f} s idle; "
        f"batch {figures['batch_with_interactive_s']:.1f} s with them, {alone:.1f} s alone"
    )
    return figures


def run(*, settings: Any = None, quick: bool = False, say: Callable[[str], None] = lambda _m: None) -> Report:
    """Measure; returns the report (see the module docstring)."""
    from modelq.broker import EmbeddedRedis

    plan = plan_for(quick)
    began = time.perf_counter()
    figures: dict[str, Any] = {
        "scenario": "fairness",
        "burst": plan.burst,
        "owner_b_jobs": OWNER_B_JOBS,
        "owner_b_delay_s": plan.owner_b_delay,
        "job_seconds": plan.job_seconds,
        "workers": WORKERS,
        "threads": THREADS,
        "broker": "embedded redis (unix socket)",
    }
    with ExitStack() as stack:
        home = Path(tempfile.mkdtemp(prefix="modelq-bench-fairness-"))
        stack.callback(shutil.rmtree, home, ignore_errors=True)
        embedded = EmbeddedRedis(home)
        embedded.ensure_running()
        stack.callback(embedded.stop)
        for name, window in (("fair", None), ("fifo", FIFO_WINDOW)):
            with ExitStack() as side_stack:
                side = Side(side_stack, home, name, window, say)
                side.warm(plan)
                figures[name] = owners_run(side, plan, say, name)
                if name == "fair":
                    figures["interactive"] = interactive_run(side, plan, say)
    figures["bench_seconds"] = round(time.perf_counter() - began, 1)
    fair, interactive = figures["fair"], figures["interactive"]
    figures["target"] = TARGET
    figures["meets_target"] = {
        "owner_b_p95_wait": fair["owner_b_p95_wait_in_service_times"]
        <= TARGET["owner_b_p95_wait_in_service_times_max"],
        "interactive_p95": interactive["interactive_p95_vs_idle"] <= TARGET["interactive_p95_vs_idle_max"],
        "batch_time": interactive["batch_with_interactive_vs_alone"] <= TARGET["batch_with_interactive_vs_alone_max"],
    }
    return report(plan, figures)


def report(plan: Plan, figures: dict[str, Any]) -> Report:
    fair, fifo, inter, meets = figures["fair"], figures["fifo"], figures["interactive"], figures["meets_target"]
    rows = [
        [
            "owner B p95 wait",
            fmt(fair["owner_b_wait_p95_s"], " s"),
            fmt(fifo["owner_b_wait_p95_s"], " s"),
            f"{fair['owner_b_p95_wait_in_service_times']:.1f} service times (<= 3)",
            verdict(meets["owner_b_p95_wait"]),
        ],
        ["owner B p50 wait", fmt(fair["owner_b_wait_p50_s"], " s"), fmt(fifo["owner_b_wait_p50_s"], " s"), "", ""],
        [
            "owner A burst",
            fmt(fair["owner_a_burst_s"], " s"),
            fmt(fifo["owner_a_burst_s"], " s"),
            f"{fair['owner_a_burst_s'] / fifo['owner_a_burst_s']:.2f}x fifo",
            "",
        ],
        [
            "interactive p95",
            fmt(inter["loaded_p95_s"], " s"),
            fmt(inter["idle_p95_s"], " s") + " idle",
            f"{inter['interactive_p95_vs_idle']:.2f}x idle (<= 2)",
            verdict(meets["interactive_p95"]),
        ],
        [
            "batch with interactive",
            fmt(inter["batch_with_interactive_s"], " s"),
            fmt(inter["batch_alone_s"], " s") + " alone",
            f"{inter['batch_with_interactive_vs_alone']:.3f}x alone (<= 1.1)",
            verdict(meets["batch_time"]),
        ],
    ]
    panels = [
        Panel(
            "owner B's wait",
            "s",
            {
                "fair p50": fair["owner_b_wait_p50_s"],
                "fair p95": fair["owner_b_wait_p95_s"],
                "fifo p50": fifo["owner_b_wait_p50_s"],
                "fifo p95": fifo["owner_b_wait_p95_s"],
            },
        ),
        Panel(
            "interactive latency",
            "s",
            {"idle p95": inter["idle_p95_s"], "under batch p95": inter["loaded_p95_s"]},
            target=TARGET["interactive_p95_vs_idle_max"] * inter["idle_p95_s"],
            target_label="2x idle",
        ),
        Panel(
            "batch time", "s", {"alone": inter["batch_alone_s"], "with interactive": inter["batch_with_interactive_s"]}
        ),
    ]
    return Report(
        scenario="fairness",
        title=f"Fair share: owner B's {OWNER_B_JOBS} jobs behind owner A's {plan.burst}, interactive behind a batch",
        figures=figures,
        columns=["", "fair (modelq)", "fifo / idle / alone", "ratio", "met"],
        rows=rows,
        panels=panels,
        notes=[
            f"{WORKERS} workers, threads pool -c {THREADS}; jobs hold a warm model for {plan.job_seconds:g} s with "
            "the CPU free. fifo = the same workers with every message sent to the broker at once.",
            f"interactive requests: one every {INTERACTIVE_INTERVAL:g} s, priority 'interactive'.",
        ],
    )

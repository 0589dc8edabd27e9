"""Scenario ``cluster`` (target C1): model scheduling across several workers, beside a static hand placement.

One embedded Redis and one job store under a fresh temporary home for the whole bench. For
each run, W fresh ``modelq worker -Q default --pool threads -c 1`` processes (hostnames
``cluster-r<run>-w<i>@modelq-bench``) share them, each with ``MODELQ_CPU_MAX_MODELS=1`` (one
model held at a time) and three models ``m0``, ``m1``, ``m2`` declared through
``MODELQ_MODELS``. A load sleeps L seconds (reading weights; ``MODELQ_BENCH_LOAD_SECONDS``,
default 2, quick 0.5) and a job (``bench.cluster_job``, :mod:`modelq.bench.cluster_tasks`)
holds its model for J = 0.1 s (quick 0.05 s) with the CPU free, like an accelerator at work.
Workers are started afresh for every run, so each run starts with no model resident. Full:
W in (1, 2, 4) and N = 200 (with L above 2 s, N, the shifting stream and the Poisson phase grow by
L / 2: with L = 10 s, 1000 jobs per burst); quick: W in (1, 2) and N = 24. ``MODELQ_BENCH_STREAMS`` and
``MODELQ_BENCH_WORKERS`` (comma-separated) rerun a subset, e.g. one stream on 2 workers;
``MODELQ_AFFINITY_MAX_WAIT`` and ``MODELQ_AFFINITY_SWITCH_FACTOR`` pass through to the workers.

Streams, submitted through this process's in-process client:

* **skewed**: N jobs at once, demand 60/30/10 % over m0/m1/m2 in a fixed interleaved order;
* **uniform**: N jobs at once, equal shares;
* **shifting**: N/2 jobs at once hot on m0 (70/20/10); when half of those have finished, the
  other N/2 at once, hot on m2 (10/20/70): the demand shifts under a running cluster;
* **poisson**: Poisson arrivals at 70 % of the cluster's capacity (0.7 x W / J jobs/s),
  skewed demand, for 60 s (quick: 4 s), the same arrivals for both sides.

Each stream runs twice per W: **modelq** (plain workers, modelq's scheduling) and **static**
(each worker pinned with ``MODELQ_WORKER_MODELS`` to the models a person would give it, in
proportion to the stream's demand, for the shifting stream its first half's: with W >= 3
one model each and the spare workers to the hottest models, with W < 3 the models grouped
to balance demand, e.g. W=2 ``m0`` and ``m1,m2``). ``off_placement_jobs`` counts the static
jobs a worker ran outside its placement (non-zero: the setting was not honoured), and
``worker_log_warnings`` the warning and error lines the run's workers logged.

Figures per (stream, W, side), from the job records (created/started/finished) and the
workers' residency rows: makespan (first submit to last finish); for bursts the lower bound
(N x J + max(M, W) x L) / W and the minimum loads max(M, W); model loads; loading share =
load seconds / (W x makespan); p95 and max wait (started - created) overall and per model;
and modelq / static makespan. Targets: bursts at W=1 and W=4 within 1.2x the bound with at
most M + W loads; on stationary streams (skewed, uniform) modelq within 1.05x static; on the
shifting stream modelq at least 1.5x faster than static (W >= 2; at W=1 both sides are one
worker holding every model); under Poisson arrivals at most 10 % of worker time loading, and no
model's oldest queued job waiting longer than the starvation bound of :mod:`modelq.models.placement`
(``head_wait_max_s`` against ``starvation_bound_s``: a job's wait from when every job of its model
submitted before it had started; ``wait_max_s`` also counts the work queued ahead of it).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelq.bench import BenchError
from modelq.bench.cluster_figures import judge, report, run_figures
from modelq.bench.cluster_plan import (
    MODELS,
    SHIFT_FIRST,
    SHIFT_SECOND,
    SIDES,
    SKEWED,
    STATIONARY,
    TASK,
    UNIFORM,
    UTILIZATION,
    Plan,
    interleave,
    placement,
    plan_for,
    planned_demand,
    scheduling_settings,
)
from modelq.bench.report import Report
from modelq.bench.support import (
    Child,
    child_env,
    hermetic_settings,
    release_results,
    wait_for_pings,
    wait_until,
)
from modelq.testing import worker_command

WORKER_START_TIMEOUT = 120.0
WORKER_STOP_TIMEOUT = 15.0
WARNING_LINE = re.compile(r": (WARNING|ERROR|CRITICAL)/")


# The cluster --------------------------------------------------------------------------------


@dataclass
class Bench:
    """The broker, the job store, and this process's app and client, shared by every run."""

    home: Path
    app: Any
    client: Any
    models_json: str


def start_bench(stack: ExitStack, home: Path, plan: Plan, say: Callable[[str], None]) -> Bench:
    """The embedded Redis and an in-process client over the job store the workers share."""
    from modelq.bench import cluster_tasks
    from modelq.broker import EmbeddedRedis
    from modelq.celery_app import create_celery_app
    from modelq.client import Client

    say(f"starting the embedded Redis under {home}")
    embedded = EmbeddedRedis(home)
    embedded.ensure_running()
    stack.callback(embedded.stop)
    declared = {"loader": cluster_tasks.LOADER, "keep_alive": -1, "options": {"load_seconds": plan.load_seconds}}
    models_json = json.dumps({name: declared for name in MODELS})
    # The workers' models are declared here too: a submission may name only declared models.
    settings = hermetic_settings(home, {"MODELQ_IMPORTS": cluster_tasks.__name__, "MODELQ_MODELS": models_json})
    app = create_celery_app(settings, start_broker=True)
    stack.callback(release_results, app)
    app.modelq.store  # noqa: B018 - migrate the job store now, not during the first run
    return Bench(home=home, app=app, client=Client.in_process(app=app), models_json=models_json)


def start_workers(
    stack: ExitStack, bench: Bench, hostnames: list[str], pinned: list[str] | None, say: Callable[[str], None]
) -> list[Child]:
    """One threads-pool worker (-c 1) per hostname, all started at once; stopped by ``stack``."""
    from modelq.bench import cluster_tasks

    children = []
    for i, hostname in enumerate(hostnames):
        extra = {"MODELQ_WORKER_MODELS": pinned[i]} if pinned else {}
        extra.update(scheduling_settings())
        env = child_env(
            bench.home,
            MODELQ_IMPORTS=cluster_tasks.__name__,
            MODELQ_MODELS=bench.models_json,
            MODELQ_CPU_MAX_MODELS="1",
            **extra,
        )
        child = Child(
            f"modelq worker {hostname}",
            worker_command("default", hostname, pool="threads", concurrency=1),
            env=env,
            cwd=bench.home,
            log=bench.home / "logs" / f"{hostname.partition('@')[0]}.log",
        )
        stack.callback(child.stop)
        children.append(child)
    stack.callback(forget, bench, hostnames)
    stack.callback(stop_all, children)  # runs first: every worker shuts down at the same time

    say(f"  waiting for {len(hostnames)} worker(s) to answer a ping")
    wait_for_pings(bench.app, hostnames, timeout=WORKER_START_TIMEOUT, check=lambda: all_alive(children))
    return children


def all_alive(children: list[Child]) -> None:
    for child in children:
        child.ensure_alive()


def stop_all(children: list[Child]) -> None:
    """SIGTERM to every worker first, then wait for each (killed after a deadline)."""
    for child in children:
        if child.alive():
            child.proc.send_signal(signal.SIGTERM)
    for child in children:
        try:
            child.proc.wait(timeout=WORKER_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            child.kill()


def forget(bench: Bench, hostnames: list[str]) -> None:
    """Drop what stopped workers published, so the next run's workers see no ghost peers.

    A worker clears its own rows when it shuts down cleanly; one killed after the deadline
    would otherwise count as a peer for a few seconds more.
    """
    store = bench.app.modelq.store
    for hostname in hostnames:
        store.forget_consumers(hostname)
        store.forget_residency(hostname)


# Streams ----------------------------------------------------------------------------------


def submit_stream(
    bench: Bench, plan: Plan, stream: str, workers: int, check: Callable[[], None]
) -> list[tuple[str, str]]:
    """Submit one stream; (model, job id) per job in submission order."""
    client, submitted = bench.client, []

    def submit(model: str) -> None:
        submitted.append((model, client.submit(TASK, {"model": model, "job_seconds": plan.job_seconds})["id"]))

    if stream in STATIONARY:
        for model in interleave(SKEWED if stream == "skewed" else UNIFORM, plan.jobs):
            submit(model)
    elif stream == "shifting":
        first = plan.shifting_jobs // 2
        store = bench.app.modelq.store
        before = finished_count(store.counts())
        for model in interleave(SHIFT_FIRST, first):
            submit(model)
        wait_until(
            lambda: finished_count(store.counts()) - before >= first // 2,
            timeout=plan.timeout(first, workers),
            what="half of the first half to finish",
            interval=0.05,
            check=check,
        )
        for model in interleave(SHIFT_SECOND, plan.shifting_jobs - first):
            submit(model)
    else:
        rate = UTILIZATION * workers / plan.job_seconds
        rng = random.Random(f"poisson-{workers}")  # the same arrivals for both sides
        started, due = time.monotonic(), 0.0
        while True:
            due += rng.expovariate(rate)
            if due >= plan.poisson_seconds:
                break
            model = rng.choices(MODELS, weights=SKEWED)[0]
            delay = started + due - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # pacing the arrivals to their schedule, not waiting for anything
            submit(model)
    return submitted


def finished_count(counts: dict[str, int]) -> int:
    from modelq.jobs.status import is_finished

    return sum(count for status, count in counts.items() if is_finished(status))


def collect(
    client: Any, submitted: list[tuple[str, str]], *, timeout: float, check: Callable[[], None]
) -> list[dict[str, Any]]:
    """Wait for every job (checking the workers every few seconds); each must have succeeded for its model.

    Raises:
        BenchError: a job did not finish in time, failed, or answered for another model.
    """
    from modelq.errors import JobTimeout

    deadline = time.monotonic() + timeout
    records = []
    for model, job_id in submitted:
        while True:
            check()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BenchError(f"timed out after {timeout:g}s waiting for job {job_id} ({model})")
            try:
                record = client.wait(job_id, timeout=min(5.0, remaining))
                break
            except JobTimeout:
                continue
        if record["status"] != "succeeded":
            raise BenchError(f"job {job_id} for {model} {record['status']}: {record.get('error')}")
        if (record.get("result") or {}).get("model") != model:
            raise BenchError(f"job {job_id} for {model} answered for {(record.get('result') or {}).get('model')}")
        records.append(record)
    return records


def run_once(
    bench: Bench, plan: Plan, stream: str, workers: int, side: str, number: int, say: Callable[[str], None]
) -> dict[str, Any]:
    """Start the workers, run one stream, read the records and residency rows, stop the workers."""
    pinned = placement(planned_demand(stream), workers) if side == "static" else None
    hostnames = [f"cluster-r{number:02d}-w{i}@modelq-bench" for i in range(workers)]
    say(f"run {number}: {stream}, W={workers}, {side}" + (f" (placement {' | '.join(pinned)})" if pinned else ""))
    with ExitStack() as stack:
        children = start_workers(stack, bench, hostnames, pinned, say)

        def check() -> None:
            all_alive(children)

        submitted = submit_stream(bench, plan, stream, workers, check)
        records = collect(bench.client, submitted, timeout=plan.timeout(len(submitted), workers), check=check)
        # Read before the workers stop: a worker forgets its rows when it shuts down.
        rows = [row for row in bench.app.modelq.store.residency() if row["worker"] in hostnames]
    figures = run_figures(plan, stream, workers, records, rows, pinned, hostnames)
    figures["worker_log_warnings"] = sum(log_warnings(child.log) for child in children)
    say(
        f"  {figures['jobs']} jobs, makespan {figures['makespan_s']:.2f}s, {figures['loads']} load(s), "
        f"p95 wait {figures['wait_p95_s']:.2f}s"
    )
    return figures


def log_warnings(path: Path) -> int:
    """Warning and error lines in a worker's log (Celery's ``[time: LEVEL/process]`` format)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return 0
    return sum(1 for line in text.splitlines() if WARNING_LINE.search(line))


# The scenario ----------------------------------------------------------------------------------


def run(*, settings: Any = None, quick: bool = False, say: Callable[[str], None] = lambda _m: None) -> Report:
    """Measure; returns the report (see the module docstring)."""
    plan = plan_for(quick)
    runs: dict[str, dict[str, dict[str, Any]]] = {stream: {} for stream in plan.streams}
    load_start, started = os.getloadavg()[0], time.perf_counter()
    with ExitStack() as stack:
        home = Path(tempfile.mkdtemp(prefix="modelq-bench-cluster-"))
        stack.callback(shutil.rmtree, home, ignore_errors=True)
        bench = start_bench(stack, home, plan, say)
        number = 0
        for stream in plan.streams:
            for workers in plan.workers:
                pair = {}
                for side in SIDES:
                    number += 1
                    pair[side] = run_once(bench, plan, stream, workers, side, number, say)
                ratio = pair["modelq"]["makespan_s"] / pair["static"]["makespan_s"]
                runs[stream][str(workers)] = {
                    **pair,
                    "modelq_vs_static": round(ratio, 4),
                    "speedup": round(1 / ratio, 4),
                }
        say("stopping the broker")
    figures: dict[str, Any] = {
        "scenario": "cluster",
        "jobs": plan.jobs,
        "shifting_jobs": plan.shifting_jobs,
        "models": len(MODELS),
        "workers": list(plan.workers),
        "load_seconds": plan.load_seconds,
        "job_seconds": plan.job_seconds,
        "poisson_seconds": plan.poisson_seconds,
        "poisson_utilization": UTILIZATION,
        "runs": runs,
        "jobs_total": sum(run[side]["jobs"] for by_w in runs.values() for run in by_w.values() for side in SIDES),
        "all_jobs_succeeded": True,  # collect() raises otherwise
        "bench_seconds": round(time.perf_counter() - started, 1),
        # Other work on the machine shows here (1-minute load average at the start and the end).
        "load_average_1m": [round(load_start, 2), round(os.getloadavg()[0], 2)],
        "budget": "MODELQ_CPU_MAX_MODELS=1",
        "scheduling_settings": scheduling_settings(),
        "pool": "threads",
        "concurrency": 1,
        "broker": "embedded redis (unix socket)",
    }
    figures["target"], figures["meets_target"] = judge(plan, runs)
    return report(plan, figures)

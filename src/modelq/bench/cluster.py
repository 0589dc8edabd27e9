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

import dataclasses
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from modelq.bench import BenchError
from modelq.bench.report import Panel, Report, fmt, verdict
from modelq.bench.support import (
    Child,
    child_env,
    hermetic_settings,
    percentile,
    release_results,
    wait_for_pings,
    wait_until,
)
from modelq.models.placement import starvation_bound

TASK = "bench.cluster_job"
MODELS = ("m0", "m1", "m2")
#: Demand in shares of the jobs per model (m0, m1, m2).
SKEWED = (60, 30, 10)
UNIFORM = (1, 1, 1)
SHIFT_FIRST = (70, 20, 10)
SHIFT_SECOND = (10, 20, 70)
BURSTS = ("skewed", "uniform", "shifting")
STREAMS = (*BURSTS, "poisson")
STATIONARY = ("skewed", "uniform")
SIDES = ("modelq", "static")
#: Poisson arrivals at this fraction of the cluster's capacity.
UTILIZATION = 0.7
LOAD_SECONDS_ENV = "MODELQ_BENCH_LOAD_SECONDS"
#: L of a full run unless set; the full plan's phases are sized for it (and scaled for a longer L).
FULL_LOAD_SECONDS = 2.0
#: Comma-separated subsets to rerun one case, e.g. ``MODELQ_BENCH_STREAMS=shifting MODELQ_BENCH_WORKERS=2``.
STREAMS_ENV = "MODELQ_BENCH_STREAMS"
WORKERS_ENV = "MODELQ_BENCH_WORKERS"
TARGET_WORKERS = (1, 4)
TARGET = {
    "burst_makespan_vs_bound_max": 1.2,
    "shifting_speedup_min": 1.5,
    "stationary_makespan_vs_static_max": 1.05,
    "poisson_load_share_max": 0.10,
}
WORKER_START_TIMEOUT = 120.0
WORKER_STOP_TIMEOUT = 15.0
WARNING_LINE = re.compile(r": (WARNING|ERROR|CRITICAL)/")


@dataclass(frozen=True)
class Plan:
    """How much to run: worker counts, jobs per burst, seconds per load and per job."""

    workers: tuple[int, ...]
    jobs: int
    #: The shifting stream is longer: each of its phases must outlast a load many times over, or
    #: no placement, static or not, can gain by following the demand.
    shifting_jobs: int
    load_seconds: float
    job_seconds: float
    poisson_seconds: float
    streams: tuple[str, ...] = STREAMS

    def jobs_in(self, stream: str) -> int:
        return self.shifting_jobs if stream == "shifting" else self.jobs

    def lower_bound(self, workers: int, jobs: int) -> float:
        """The shortest a burst can take: all the job time and the unavoidable loads, spread evenly."""
        return (jobs * self.job_seconds + self.min_loads(workers) * self.load_seconds) / workers

    @staticmethod
    def min_loads(workers: int) -> int:
        return max(len(MODELS), workers)

    def timeout(self, jobs: int, workers: int) -> float:
        """A deadline no run can miss unless something hangs: every job paying a load."""
        return 60.0 + self.poisson_seconds + jobs * (self.job_seconds + self.load_seconds) / workers


def plan_for(quick: bool) -> Plan:
    """The plan; ``MODELQ_BENCH_LOAD_SECONDS`` sets L (default 2 s, quick 0.5 s).

    Raises:
        BenchError: the variable is not a number of seconds.
    """
    raw = os.environ.get(LOAD_SECONDS_ENV)
    try:
        load_seconds = float(raw) if raw else (0.5 if quick else FULL_LOAD_SECONDS)
    except ValueError:
        load_seconds = -1.0
    if not load_seconds >= 0:
        raise BenchError(f"{LOAD_SECONDS_ENV} must be a number of seconds >= 0, got {raw!r}")
    if quick:
        chosen = Plan(
            workers=(1, 2), jobs=24, shifting_jobs=24, load_seconds=load_seconds, job_seconds=0.05, poisson_seconds=4.0
        )
    else:
        # Phases grow with L beyond 2 s, so a load stays as small a part of them (L = 10 s: bursts of
        # 1000 and 4000 jobs, 300 s of Poisson arrivals); the ratios then compare like with like.
        scale = max(load_seconds / FULL_LOAD_SECONDS, 1.0)
        chosen = Plan(
            workers=(1, 2, 4),
            jobs=round(200 * scale),
            shifting_jobs=round(800 * scale),
            load_seconds=load_seconds,
            job_seconds=0.1,
            poisson_seconds=60.0 * scale,
        )
    streams = subset(STREAMS_ENV, STREAMS, str)
    workers = subset(WORKERS_ENV, chosen.workers, int)
    return dataclasses.replace(chosen, streams=streams, workers=workers)


def scheduling_settings() -> dict[str, str]:
    """``MODELQ_AFFINITY_*`` from this process's environment, passed to the workers (the bench is
    otherwise hermetic), so it can show the trade-off between waits and loads they set."""
    return {key: value for key, value in os.environ.items() if key.startswith("MODELQ_AFFINITY_")}


def scheduling_factors() -> dict[str, float]:
    """The switch factor and max wait the workers run with (``MODELQ_AFFINITY_*`` or the defaults)."""
    from modelq.config import Settings

    defaults = Settings.model_fields
    names = {"switch_factor": "affinity_switch_factor", "max_wait": "affinity_max_wait"}
    return {
        key: float(os.environ.get(f"MODELQ_{field.upper()}", defaults[field].default)) for key, field in names.items()
    }


def subset(variable: str, full: tuple, convert: Callable[[str], Any]) -> tuple:
    """The items of ``full`` named in the comma-separated environment ``variable`` (all when unset).

    Raises:
        BenchError: it names something ``full`` lacks.
    """
    raw = os.environ.get(variable, "").strip()
    if not raw:
        return full
    try:
        picked = tuple(convert(item.strip()) for item in raw.split(",") if item.strip())
    except ValueError:
        picked = ()
    if not picked or any(item not in full for item in picked):
        raise BenchError(f"{variable} must name some of {', '.join(map(str, full))}, got {raw!r}")
    return tuple(item for item in full if item in picked)


def interleave(shares: tuple[int, ...], n: int) -> list[str]:
    """``n`` model names in proportion to ``shares``, spread evenly (smooth weighted round robin)."""
    total, credit, order = sum(shares), [0] * len(shares), []
    for _ in range(n):
        credit = [c + s for c, s in zip(credit, shares, strict=True)]
        pick = max(range(len(shares)), key=lambda k: credit[k])
        credit[pick] -= total
        order.append(MODELS[pick])
    return order


def planned_demand(stream: str) -> tuple[int, ...]:
    """The demand a person placing models by hand plans for (the shifting stream's first half)."""
    return {"uniform": UNIFORM, "shifting": SHIFT_FIRST}.get(stream, SKEWED)


def placement(shares: tuple[int, ...], workers: int) -> list[str]:
    """``MODELQ_WORKER_MODELS`` for each worker: the hand placement for this demand.

    With at least one worker per model, every model gets one and each spare worker goes to the
    model with the most demand per worker; with fewer, the models (hottest first) go to the
    worker with the least demand so far, so one worker may serve several.
    """
    m = len(MODELS)
    if workers >= m:
        seats = [1] * m
        for _ in range(workers - m):
            seats[max(range(m), key=lambda k: shares[k] / seats[k])] += 1
        return [MODELS[k] for k in range(m) for _ in range(seats[k])]
    groups: list[list[str]] = [[] for _ in range(workers)]
    demand = [0] * workers
    for k in sorted(range(m), key=lambda k: -shares[k]):
        w = min(range(workers), key=lambda w: demand[w])
        groups[w].append(MODELS[k])
        demand[w] += shares[k]
    return [",".join(sorted(group)) for group in groups]


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
            [
                sys.executable,
                "-m",
                "modelq",
                "worker",
                "-Q",
                "default",
                "--pool",
                "threads",
                "-c",
                "1",
                "--loglevel",
                "WARNING",
                "--hostname",
                hostname,
            ],
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


# Figures ----------------------------------------------------------------------------------


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value)


def head_waits(records: list[dict[str, Any]]) -> list[float]:
    """Per job, how long it waited as the oldest queued job of its model: from when every job of its
    model submitted before it had started (or from its own submission, if later) to its start. The
    starvation bound is about this wait; the rest of a job's wait is the work queued ahead of it for
    its own model."""
    waits: list[float] = []
    by_model: dict[str, list[dict[str, Any]]] = {}
    for r in sorted(records, key=lambda r: _at(r["created_at"])):
        by_model.setdefault(r["input"]["model"], []).append(r)
    for jobs in by_model.values():
        ahead_started: datetime | None = None  # the latest start of the jobs submitted before this one
        for r in jobs:
            created, started = _at(r["created_at"]), _at(r["started_at"])
            head_since = created if ahead_started is None else max(created, ahead_started)
            waits.append(max((started - head_since).total_seconds(), 0.0))
            ahead_started = started if ahead_started is None else max(ahead_started, started)
    return waits


def run_figures(
    plan: Plan,
    stream: str,
    workers: int,
    records: list[dict[str, Any]],
    rows: list[dict[str, Any]],
    pinned: list[str] | None,
    hostnames: list[str],
) -> dict[str, Any]:
    """One run's figures: makespan, bound, loads, loading share, waits (overall and per model)."""
    first = min(_at(r["created_at"]) for r in records)
    makespan = (max(_at(r["finished_at"]) for r in records) - first).total_seconds()
    waits: dict[str, list[float]] = {m: [] for m in MODELS}
    for r in records:
        waits[r["input"]["model"]].append((_at(r["started_at"]) - _at(r["created_at"])).total_seconds())
    every_wait = [w for ws in waits.values() for w in ws]
    loads_by_model = {m: sum(int(row["loads"]) for row in rows if row["model"] == m) for m in MODELS}
    load_seconds = sum(float(row["load_seconds"]) for row in rows)
    figures: dict[str, Any] = {
        "jobs": len(records),
        "makespan_s": round(makespan, 3),
        "loads": sum(loads_by_model.values()),
        "loads_by_model": loads_by_model,
        "load_seconds_total": round(load_seconds, 3),
        "load_share": round(load_seconds / (workers * makespan), 4),
        "wait_p95_s": round(percentile(every_wait, 95), 3),
        "wait_max_s": round(max(every_wait), 3),
        "head_wait_max_s": round(max(head_waits(records)), 3),
        "wait_by_model": {
            m: {"jobs": len(ws), "p95_s": round(percentile(ws, 95), 3), "max_s": round(max(ws), 3)}
            for m, ws in waits.items()
            if ws
        },
        "jobs_by_worker": {h: sum(1 for r in records if r.get("worker") == h) for h in hostnames},
    }
    if stream in BURSTS:
        bound = plan.lower_bound(workers, plan.jobs_in(stream))
        figures.update(
            lower_bound_s=round(bound, 3),
            makespan_vs_bound=round(makespan / bound, 4),
            min_loads=plan.min_loads(workers),
        )
    else:
        figures.update(
            lower_bound_s=None,
            makespan_vs_bound=None,
            min_loads=None,
            arrival_rate_per_s=round(UTILIZATION * workers / plan.job_seconds, 3),
        )
    figures["starvation_bound_s"] = round(
        starvation_bound(len(MODELS), plan.load_seconds, plan.job_seconds, **scheduling_factors()), 3
    )
    if pinned is not None:
        allowed = {h: set(models.split(",")) for h, models in zip(hostnames, pinned, strict=True)}
        figures["placement"] = dict(zip(hostnames, pinned, strict=True))
        figures["off_placement_jobs"] = sum(
            1 for r in records if r["input"]["model"] not in allowed.get(r.get("worker"), set())
        )
    return figures


def judge(plan: Plan, runs: dict[str, dict[str, dict[str, Any]]]) -> tuple[dict[str, Any], dict[str, bool]]:
    """The targets that apply to this plan's worker counts, and whether each was met."""
    target: dict[str, Any] = {
        **TARGET,
        "burst_workers": [w for w in TARGET_WORKERS if w in plan.workers],
        "burst_loads_max": {str(w): len(MODELS) + w for w in TARGET_WORKERS if w in plan.workers},
    }
    meets: dict[str, bool] = {}
    for stream, by_workers in runs.items():
        for key, run in by_workers.items():
            workers, mine = int(key), run["modelq"]
            if stream in BURSTS and workers in TARGET_WORKERS:
                meets[f"{stream}_w{workers}_makespan_vs_bound"] = (
                    mine["makespan_vs_bound"] <= TARGET["burst_makespan_vs_bound_max"]
                )
                meets[f"{stream}_w{workers}_loads"] = mine["loads"] <= len(MODELS) + workers
            if stream in STATIONARY:
                meets[f"{stream}_w{workers}_vs_static"] = (
                    run["modelq_vs_static"] <= TARGET["stationary_makespan_vs_static_max"]
                )
            if stream == "shifting" and workers >= 2:
                meets[f"shifting_w{workers}_speedup"] = run["speedup"] >= TARGET["shifting_speedup_min"]
            if stream == "poisson":
                meets[f"poisson_w{workers}_load_share"] = mine["load_share"] <= TARGET["poisson_load_share_max"]
                meets[f"poisson_w{workers}_wait_within_bound"] = mine["head_wait_max_s"] <= mine["starvation_bound_s"]
    return target, meets


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


def report(plan: Plan, figures: dict[str, Any]) -> Report:
    runs, meets = figures["runs"], figures["meets_target"]
    rows = []
    for stream, by_workers in runs.items():
        for key, run in by_workers.items():
            mine, static = run["modelq"], run["static"]
            prefix = f"{stream}_w{key}_"
            checks = {name.removeprefix(prefix): ok for name, ok in meets.items() if name.startswith(prefix)}
            failed = [name for name, ok in checks.items() if not ok]
            met = "" if not checks else verdict(True) if not failed else f"[red]no: {', '.join(failed)}[/red]"
            rows.append(
                [
                    f"{stream} W={key}",
                    fmt(mine["makespan_s"], " s"),
                    fmt(static["makespan_s"], " s"),
                    fmt(run["modelq_vs_static"], "x"),
                    fmt(mine["lower_bound_s"], " s"),
                    fmt(mine["makespan_vs_bound"], "x"),
                    f"{mine['loads']} / {static['loads']}",
                    f"{mine['load_share'] * 100:.1f} %",
                    f"{mine['wait_p95_s']:.2f} / {static['wait_p95_s']:.2f} s",
                    met,
                ]
            )

    def bars(stream: str, pick: Callable[[dict[str, Any]], float]) -> dict[str, float]:
        return {f"W{w} {side}": float(pick(runs[stream][w][side])) for w in runs[stream] for side in SIDES}

    panels = [Panel(f"{s}: makespan", "s", bars(s, lambda r: r["makespan_s"])) for s in BURSTS if s in runs]
    if "poisson" in runs:
        panels.append(Panel("poisson: p95 wait", "s", bars("poisson", lambda r: r["wait_p95_s"])))
    panels += [Panel(f"{s}: model loads", "loads", bars(s, lambda r: r["loads"])) for s in runs]
    return Report(
        scenario="cluster",
        title=f"Model scheduling over {'/'.join(map(str, plan.workers))} workers, 3 models, room for one each: "
        "modelq vs static placement",
        figures=figures,
        columns=[
            "",
            "modelq",
            "static",
            "mq/static",
            "bound",
            "mq/bound",
            "loads mq/st",
            "loading mq",
            "p95 wait mq/st",
            "met",
        ],
        rows=rows,
        panels=panels,
        notes=[
            "mq = modelq's scheduling, st = static placement. "
            f"{plan.jobs} jobs per burst ({plan.shifting_jobs} in the shifting one) of J = {plan.job_seconds:g} s each, loads of L = {plan.load_seconds:g} s "
            f"({LOAD_SECONDS_ENV}); Poisson arrivals at {UTILIZATION:.0%} of capacity for {plan.poisson_seconds:g} s. "
            "Workers are threads-pool (-c 1) processes with MODELQ_CPU_MAX_MODELS=1, started afresh for every run.",
            "bound = (N x J + max(M, W) x L) / W; starvation bound (the longest a model's oldest queued job may wait) = "
            "max_wait + (M - 1) x ((k + 1) x L + J) + L. static = each worker pinned with MODELQ_WORKER_MODELS in proportion "
            "to the stream's (first half's) demand; off_placement_jobs in the JSON counts jobs it ran elsewhere.",
        ],
    )

"""The plan of scenario ``cluster`` (:mod:`modelq.bench.cluster`): models, streams, demand, targets,
how much to run, and the static placement a person would configure."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from modelq.bench import BenchError

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

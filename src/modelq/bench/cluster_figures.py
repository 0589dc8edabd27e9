"""The figures of scenario ``cluster`` (:mod:`modelq.bench.cluster`): per run from the job records and
residency rows, the targets judged over all runs, and the report (table and chart)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from modelq.bench.cluster_plan import (
    BURSTS,
    LOAD_SECONDS_ENV,
    MODELS,
    SIDES,
    STATIONARY,
    TARGET,
    TARGET_WORKERS,
    UTILIZATION,
    Plan,
    scheduling_factors,
)
from modelq.bench.report import Panel, Report, fmt, verdict
from modelq.bench.support import percentile
from modelq.models.placement import starvation_bound


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

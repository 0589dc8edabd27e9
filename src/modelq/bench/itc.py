"""Scenario ``itc`` (target T1): ITC-2007 comp01–comp07 at a fixed time budget, on 1 and 2 workers,
beside the competition winner's soft costs.

One embedded Redis under a fresh temporary home; two ``modelq worker -Q cpu`` processes of one
slot each, so a worker is one core (on a 2-core machine the two together are what ``modelq up``
starts: one cpu worker of one process per core). Each instance runs as a ``timetable`` job with
``time_limit`` set to the budget (one island per free slot, see
:mod:`modelq.workloads.timetable.inputs`), first on 1 worker (the second one stops consuming
the cpu queue), then on 2 workers, at the same wall-clock budget and seed.

Figures: per instance the best soft cost (and hard violations) on each side, its ratio to the
winner's, and the best cost over time (the job's per-epoch history); the geometric mean of the
ratios; how many instances 2 workers did better on. The chart plots cost over time per instance.

Environment (for a shorter run): ``MODELQ_BENCH_BUDGET`` seconds per job (default 300; 10 with
``--quick``), ``MODELQ_BENCH_INSTANCES`` (comma-separated, default every instance; ``--quick``:
comp01). The instances come from ``MODELQ_ITC2007_DIR`` (default ``../shared/data/itc2007``
beside the project, as this workplace has it).
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from modelq.bench import BenchError
from modelq.bench.report import Panel, Report, fmt
from modelq.bench.timetable import _start, _warm_up

#: Soft costs of the ITC-2007 winner (T. Müller), every one with zero hard violations.
WINNER = {"comp01": 5, "comp02": 43, "comp03": 72, "comp04": 35, "comp05": 298, "comp06": 41, "comp07": 14}
TARGET = {"geomean_ratio_max": 1.2, "ratio_max": 1.5, "two_workers_better_min": 6}
DEFAULT_BUDGET = 300.0
SEED = 1


def instances_dir() -> Path:
    configured = os.environ.get("MODELQ_ITC2007_DIR")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[3].parent / "shared" / "data" / "itc2007"


def run(*, settings: Any = None, quick: bool = False, say: Callable[[str], None] = lambda _m: None) -> Report:
    """Measure; returns the report (see the module docstring)."""
    budget = float(os.environ.get("MODELQ_BENCH_BUDGET") or (10 if quick else DEFAULT_BUDGET))
    names = [
        n.strip()
        for n in (os.environ.get("MODELQ_BENCH_INSTANCES") or ("comp01" if quick else ",".join(WINNER))).split(",")
        if n.strip()
    ]
    unknown = [n for n in names if n not in WINNER]
    if unknown:
        raise BenchError(f"unknown ITC-2007 instance(s) {', '.join(unknown)}; known: {', '.join(WINNER)}")
    folder = instances_dir()
    missing = [n for n in names if not (folder / f"{n}.ctt").is_file()]
    if missing:
        raise BenchError(f"no {', '.join(f'{n}.ctt' for n in missing)} under {folder}; set MODELQ_ITC2007_DIR")
    rows: dict[str, dict[str, Any]] = {}
    with ExitStack() as stack:
        home = Path(tempfile.mkdtemp(prefix="modelq-bench-itc-"))
        stack.callback(shutil.rmtree, home, ignore_errors=True)
        client, start_workers, consume = _start(stack, home, say, concurrency=1)
        start_workers("w1", "w2")
        _warm_up(client, jobs=2)  # numba's compiled annealing is cached on disk by the first jobs
        say(f"{len(names)} instance(s), {budget:.0f} s each on 1 worker, then on 2 workers")
        for name in names:
            ctt = (folder / f"{name}.ctt").read_text()
            row = rows[name] = {"winner": WINNER[name]}
            for side, both in (("1 worker", False), ("2 workers", True)):
                consume("w2", both)
                row[side] = _timed(client, ctt, budget, f"{name} on {side}", say)
                row[side]["ratio"] = round(row[side]["soft"] / WINNER[name], 3)
        say("stopping workers and the broker")
    return _report(rows, budget)


def _timed(client: Any, ctt: str, budget: float, what: str, say: Callable[[str], None]) -> dict[str, Any]:
    started = time.perf_counter()
    job = client.submit(
        "timetable", {"ctt": ctt, "quality_mode": "best", "time_limit": budget, "seed": SEED, "variants": 1}
    )
    done = client.wait(job["id"], timeout=budget * 2 + 300)
    seconds = time.perf_counter() - started
    if done["status"] != "succeeded":
        raise BenchError(f"the timetable job for {what} {done['status']}: {done.get('error')}")
    result = done["result"]
    best = result["best"]
    step = budget / max(len(result["history"]), 1)
    trace = [[round(step * h["epoch"], 1), h["hard"], h["soft"]] for h in result["history"]]
    say(
        f"  {what}: hard {best['hard']} soft {best['soft']} in {seconds:.0f} s "
        f"({result['settings']['islands']} islands)"
    )
    return {
        "hard": best["hard"],
        "soft": best["soft"],
        "seconds": round(seconds, 1),
        "islands": result["settings"]["islands"],
        "evaluations": result["evaluations"],
        "trace": trace,
    }


def _geomean(values: list[float]) -> float:
    return round(math.exp(sum(math.log(max(v, 1e-9)) for v in values) / len(values)), 3) if values else 0.0


def _report(rows: dict[str, dict[str, Any]], budget: float) -> Report:
    sides = ("1 worker", "2 workers")
    geomean = {side: _geomean([row[side]["ratio"] for row in rows.values()]) for side in sides}
    worst = {side: max(row[side]["ratio"] for row in rows.values()) for side in sides}
    feasible = all(row[side]["hard"] == 0 for row in rows.values() for side in sides)
    better = sum(
        1
        for row in rows.values()
        if (row["2 workers"]["hard"], row["2 workers"]["soft"]) < (row["1 worker"]["hard"], row["1 worker"]["soft"])
    )
    full = len(rows) == len(WINNER)
    meets = {
        "feasible": feasible,
        "geomean_ratio": geomean["2 workers"] <= TARGET["geomean_ratio_max"],
        "ratio_max": worst["2 workers"] <= TARGET["ratio_max"],
        "two_workers_better": better >= (TARGET["two_workers_better_min"] if full else len(rows)),
    }
    figures: dict[str, Any] = {
        "scenario": "itc",
        "budget_seconds": budget,
        "instances": rows,
        "geomean_ratio": geomean,
        "max_ratio": worst,
        "two_workers_better_on": better,
        "feasible": feasible,
        "target": dict(TARGET),
        "meets_target": meets,
        "workers": "2 x modelq worker -Q cpu --pool prefork -c 1 (the second one off for the 1-worker runs)",
        "cpu_count": os.cpu_count(),
    }
    yes = {True: "[green]yes[/green]", False: "[red]no[/red]"}
    table = []
    for name, row in rows.items():
        one, two = row["1 worker"], row["2 workers"]
        table.append(
            [
                name,
                str(row["winner"]),
                f"{one['soft']} ({fmt(one['ratio'], 'x')})",
                f"{two['soft']} ({fmt(two['ratio'], 'x')})",
                "" if one["hard"] == two["hard"] == 0 else "HARD",
            ]
        )
    table.append(
        [
            "geometric mean ratio",
            "",
            fmt(geomean["1 worker"], "x"),
            fmt(geomean["2 workers"], "x"),
            f"<= {TARGET['geomean_ratio_max']}x {yes[meets['geomean_ratio']]}",
        ]
    )
    table.append(["2 workers better on", "", "", f"{better} of {len(rows)}", yes[meets["two_workers_better"]]])
    curves = {
        f"{name} ({side})": [(t, soft) for t, hard, soft in row[side]["trace"] if hard == 0]
        for name, row in rows.items()
        for side in sides
    }
    return Report(
        scenario="itc",
        title=f"T1: ITC-2007 comp01-comp07 in {budget:.0f} s, 1 worker vs 2, beside the winner",
        figures=figures,
        columns=["instance", "winner", "1 worker (ratio)", "2 workers (ratio)", "note"],
        rows=table,
        panels=[
            Panel(
                "soft cost / winner's (2 workers)",
                "ratio",
                {n: float(r["2 workers"]["ratio"]) for n, r in rows.items()},
                target=TARGET["ratio_max"],
                target_label="<= 1.5x",
            ),
            Panel("best soft cost over time", "soft penalty (log)", {}, lines=curves, xlabel="seconds"),
        ],
        notes=[
            f"Each job: quality_mode best, time_limit {budget:.0f} s, seed {SEED}, one island per free slot; "
            f"{os.cpu_count()} cores. Winner: T. Müller's ITC-2007 results."
        ],
    )

"""Scenario ``switch`` (target P4): a mixed stream over two models with room for one, beside a
single-model stream.

One embedded Redis under a fresh temporary home; one ``modelq worker -Q default --pool threads
-c 2`` with ``MODELQ_CPU_MAX_MODELS=1`` and three models declared through ``MODELQ_MODELS``,
all loaded by :func:`modelq.bench.model_tasks.load_mlp` (a small MLP, 8 MiB of weights):
``bench-a`` and ``bench-b`` take about a second to load, like a real model; ``bench-other``
loads at once and only serves to empty the budget. A job (``bench.infer``) is a few
milliseconds of forward passes through the model its input names.

* **single**: N jobs for ``bench-a``, submitted at once, then waited for.
* **mixed**: N jobs alternating ``bench-a`` / ``bench-b``, submitted at once, then waited for.

Before each stream a ``bench-other`` job runs, so every stream starts with neither model
resident: the single stream pays one load, a mixed stream at least two. ``switches`` = model
loads during the mixed stream (the worker's residency figures) minus 1; ``throughput_ratio``
= mixed jobs/s / single jobs/s. Full runs do two rounds (single then mixed, mixed then single)
and add them up; ``switches`` is the worst round's.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Any

from modelq.bench import BenchError
from modelq.bench.report import Panel, Report, fmt, verdict
from modelq.bench.support import percentile
from modelq.bench.warm import ModelWorker, loads_by_model, residency_rows, start_model_worker

WORKER = "switch@modelq-bench"
CONCURRENCY = 2
#: Seconds each of the two models takes to load.
LOAD_SECONDS = 1.0
STREAM_TIMEOUT = 300.0
CALL_TIMEOUT = 60.0


def target(jobs: int) -> dict[str, float]:
    """P4: few switches, and a mixed throughput within 0.9 of the best a mixed stream can do here
    (the single stream's time plus the one unavoidable extra load: ``throughput_ratio_bound``)."""
    return {"switches_max": jobs / 16, "of_bound_min": 0.9}


def run(*, settings: Any = None, quick: bool = False, say: Callable[[str], None] = lambda _m: None) -> Report:
    """Measure; returns the report (see the module docstring)."""
    from modelq.bench.model_tasks import MLP_LOADER, MODEL_A, MODEL_B, MODEL_OTHER

    n_jobs = 32 if quick else 64
    rounds = 1 if quick else 2
    slow = {"loader": MLP_LOADER, "keep_alive": -1, "options": {"load_seconds": LOAD_SECONDS}}
    models = {
        MODEL_A: slow,
        MODEL_B: slow,
        MODEL_OTHER: {"loader": MLP_LOADER, "keep_alive": -1, "options": {"load_seconds": 0}},
    }
    streams = {
        "single": [MODEL_A] * n_jobs,
        "mixed": [MODEL_A if i % 2 == 0 else MODEL_B for i in range(n_jobs)],
    }
    elapsed = {"single": 0.0, "mixed": 0.0}
    loads: dict[str, list[int]] = {"single": [], "mixed": []}
    runs: dict[str, list[int]] = {"single": [], "mixed": []}
    job_seconds: list[float] = []
    load_start = os.getloadavg()[0]

    with ExitStack() as stack:
        home = Path(tempfile.mkdtemp(prefix="modelq-bench-switch-"))
        stack.callback(shutil.rmtree, home, ignore_errors=True)
        worker = start_model_worker(
            stack,
            home,
            hostname=WORKER,
            models=models,
            concurrency=CONCURRENCY,
            env={"MODELQ_CPU_MAX_MODELS": "1"},
            say=say,
        )
        client = worker.client

        say("warm-up: one job per model (imports torch, loads each model once)")
        for name in (MODEL_A, MODEL_B, MODEL_OTHER):
            client.run("bench.infer", {"model": name}, timeout=CALL_TIMEOUT)

        order = [("single", "mixed"), ("mixed", "single")][:rounds]
        for round_, kinds in enumerate(order):
            for kind in kinds:
                # Empty the budget of one: the stream starts with neither of its models resident.
                client.run("bench.infer", {"model": MODEL_OTHER}, timeout=CALL_TIMEOUT)
                before = loads_by_model(worker)
                say(f"round {round_ + 1}/{rounds}: {kind} stream of {n_jobs} jobs")
                seconds, records = _stream(client, streams[kind])
                after = loads_by_model(worker)
                elapsed[kind] += seconds
                loads[kind].append(sum(after.get(m, 0) - before.get(m, 0) for m in (MODEL_A, MODEL_B)))
                runs[kind].append(_runs(records))
                job_seconds.extend(_job_seconds(records))
                say(f"  {seconds:.2f}s, {loads[kind][-1]} load(s), {runs[kind][-1]} run(s) of one model")
        load_seconds = _load_seconds(worker, (MODEL_A, MODEL_B))
        load_average = [round(load_start, 2), round(os.getloadavg()[0], 2)]
        say("stopping the worker and the broker")
    report = _report(n_jobs, rounds, elapsed, loads, runs, load_seconds, job_seconds)
    # Other work on the machine shows here (1-minute load average at the start and the end).
    report.figures["load_average_1m"] = load_average
    return report


def _stream(client: Any, models: list[str]) -> tuple[float, list[dict[str, Any]]]:
    """Submit one job per entry at once, wait for all; (seconds, records in submission order)."""
    started = time.perf_counter()
    ids = [client.submit("bench.infer", {"model": m})["id"] for m in models]
    records = [client.wait(job_id, timeout=STREAM_TIMEOUT) for job_id in ids]
    seconds = time.perf_counter() - started
    for model, record in zip(models, records, strict=True):
        if record["status"] != "succeeded":
            raise BenchError(f"job {record['id']} {record['status']}: {record.get('error')}")
        if record["result"]["model"] != model:
            raise BenchError(f"job {record['id']} for {model} answered for {record['result']['model']}")
    return seconds, records


def _runs(records: list[dict[str, Any]]) -> int:
    """How many runs of one model the jobs formed, in the order they started."""
    order = [r["input"]["model"] for r in sorted(records, key=lambda r: r["started_at"])]
    return sum(1 for i, model in enumerate(order) if i == 0 or model != order[i - 1])


def _job_seconds(records: list[dict[str, Any]]) -> list[float]:
    return [
        (datetime.fromisoformat(r["finished_at"]) - datetime.fromisoformat(r["started_at"])).total_seconds()
        for r in records
    ]


def _load_seconds(worker: ModelWorker, models: tuple[str, ...]) -> float:
    """Mean seconds per load of ``models``, from the worker's residency figures."""
    rows = [r for r in residency_rows(worker) if r["model"] in models]
    count = sum(int(r["loads"]) for r in rows)
    return sum(float(r["load_seconds"]) for r in rows) / count if count else 0.0


def _report(
    n_jobs: int,
    rounds: int,
    elapsed: dict[str, float],
    loads: dict[str, list[int]],
    runs: dict[str, list[int]],
    load_seconds: float,
    job_seconds: list[float],
) -> Report:
    goal = target(n_jobs)
    throughput = {kind: n_jobs * rounds / elapsed[kind] for kind in elapsed}
    ratio = throughput["mixed"] / throughput["single"]
    switches = max(loads["mixed"]) - 1
    # The best a mixed stream can do: the single stream's time plus the one unavoidable extra load.
    single_seconds = elapsed["single"] / rounds
    bound = single_seconds / (single_seconds + load_seconds)
    of_bound = ratio / bound
    meets = {"switches": switches <= goal["switches_max"], "of_bound": of_bound >= goal["of_bound_min"]}
    figures: dict[str, Any] = {
        "scenario": "switch",
        "jobs": n_jobs,
        "switches": switches,
        "throughput_ratio": round(ratio, 4),
        "single_throughput": round(throughput["single"], 2),
        "mixed_throughput": round(throughput["mixed"], 2),
        "single_seconds": round(single_seconds, 3),
        "mixed_seconds": round(elapsed["mixed"] / rounds, 3),
        "single_loads": max(loads["single"]),
        "mixed_loads": max(loads["mixed"]),
        "mixed_loads_per_round": loads["mixed"],
        "mixed_model_runs_per_round": runs["mixed"],
        "load_seconds": round(load_seconds, 3),
        "job_p50_ms": round(percentile(job_seconds, 50) * 1000, 3),
        "throughput_ratio_bound": round(bound, 4),
        "of_bound": round(of_bound, 4),
        "rounds": rounds,
        "models": 2,
        "budget": "MODELQ_CPU_MAX_MODELS=1",
        "pool": "threads",
        "concurrency": CONCURRENCY,
        "broker": "embedded redis (unix socket)",
        "target": goal,
        "meets_target": meets,
    }

    rows = [
        ["jobs/s", fmt(throughput["single"], "", 1), fmt(throughput["mixed"], "", 1), fmt(ratio, "x"), "", ""],
        ["of the best possible", "", "", fmt(of_bound, "x"), f">= {goal['of_bound_min']}x", verdict(meets["of_bound"])],
        ["seconds per stream", fmt(single_seconds, " s"), fmt(elapsed["mixed"] / rounds, " s"), "", "", ""],
        ["model loads", str(max(loads["single"])), str(max(loads["mixed"])), "", "", ""],
        ["switches", "", str(switches), "", f"<= {goal['switches_max']:g}", verdict(meets["switches"])],
    ]
    return Report(
        scenario="switch",
        title=f"P4: {n_jobs} jobs alternating two models, room for one, vs one model",
        figures=figures,
        columns=["", "single model", "mixed A/B", "/single", "target", "met"],
        rows=rows,
        panels=[
            Panel(
                "throughput",
                "jobs/s",
                {"single model": throughput["single"], "mixed A/B": throughput["mixed"]},
                target=throughput["single"] * bound * goal["of_bound_min"],
                target_label="P4 floor (0.9x the best possible)",
            ),
            Panel(
                "model switches (mixed)",
                "switches",
                {"measured": float(switches)},
                target=goal["switches_max"],
                target_label=f"P4 limit (jobs/16 = {goal['switches_max']:g})",
            ),
        ],
        notes=[
            f"One threads-pool worker (-c {CONCURRENCY}), MODELQ_CPU_MAX_MODELS=1; a load takes {load_seconds:.2f} s, "
            f"a job {percentile(job_seconds, 50) * 1000:.1f} ms (p50, started to finished); {rounds} round(s), each "
            "stream starting with neither model resident.",
            f"With one unavoidable extra load, the best mixed/single ratio here is {bound:.2f}x "
            "(single-stream time / (single-stream time + one load)).",
        ],
    )

"""Scenario ``timetable`` (target P6): the island model on 1 worker vs 2 workers, same total work.

One embedded Redis under a fresh temporary home; ``modelq worker -Q cpu --pool prefork -c 1``
processes. The job is the same ``timetable`` job every time (4 islands, a fixed seed, the same
generations), so both sides evaluate exactly the same number of timetables and, being
deterministic, return the same variants (``same_result``):

* **1 worker**: one worker process consumes the cpu queue (the second one is told to stop
  consuming it, ``cancel_consumer``);
* **2 workers**: the second worker consumes it again (2 cores: one island per core at a time);
  the two sides alternate, round after round, so both see the same machine noise;
* **local**: the same job without Celery in this process (``sequential``: what the queue costs);
* **machine ceiling**: one island epoch alone, then two at once, in two warm local processes:
  what two cores of this machine give this very computation with no queue at all.

``speedup`` = 1-worker seconds / 2-worker seconds (best of the repeats), ``efficiency`` =
speedup / 2. The seed deployment measured 3.3x on 8 workers (41 % efficiency). Then each
quality mode runs once on the 2 workers and its best hard and soft scores are reported.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from modelq.bench import BenchError
from modelq.bench.report import Panel, Report, fmt
from modelq.bench.support import Child, child_env, hermetic_settings, release_results, wait_until
from modelq.testing import worker_command

TARGET = {"speedup_min": 1.8}
SEED_BASELINE = {"workers": 8, "speedup": 3.3, "efficiency": 0.41}
WORKER_START_TIMEOUT = 90.0
JOB_TIMEOUT = 600.0
#: The bench instance: 60 courses, 164 lectures, 8 rooms, 5 days x 6 periods, 80 % of the slots used.
INSTANCE = {
    "seed": 5,
    "courses": 60,
    "rooms": 8,
    "days": 5,
    "periods_per_day": 6,
    "fill": 0.8,
    "curricula": 25,
    "curriculum_size": 6,
    "unavailability": 80,
    "name": "bench-60",
}
MODES = ("fast", "balanced", "best")


def run(*, settings: Any = None, quick: bool = False, say: Callable[[str], None] = lambda _m: None) -> Report:
    """Measure; returns the report (see the module docstring)."""
    from modelq.workloads.timetable import instance_to_dict, solve
    from modelq.workloads.timetable.generate import generate_instance

    instance, _planted = generate_instance(**INSTANCE)
    job = {
        "seed": 1,
        "islands": 4,
        "population": 32,
        "epochs": 2 if quick else 4,
        "generations": 8 if quick else 150,
        "quality_mode": "balanced",
        "variants": 3,
    }
    repeats = 1 if quick else 2
    mode_overrides = {"epochs": 1, "generations": 3} if quick else {}
    payload = {"instance": instance_to_dict(instance)}
    timings: dict[str, list[float]] = {"1 worker": [], "2 workers": []}
    results: dict[str, list[dict]] = {"1 worker": [], "2 workers": []}
    modes: dict[str, dict[str, Any]] = {}
    load = os.getloadavg()[0]
    with ExitStack() as stack:
        home = Path(tempfile.mkdtemp(prefix="modelq-bench-timetable-"))
        stack.callback(shutil.rmtree, home, ignore_errors=True)
        client, start_workers, consume = _start(stack, home, say)

        def timed(side: str) -> None:
            started = time.perf_counter()
            done = client.wait(client.submit("timetable", {**payload, **job})["id"], timeout=JOB_TIMEOUT)
            elapsed = time.perf_counter() - started
            if done["status"] != "succeeded":
                raise BenchError(f"the timetable job on {side} {done['status']}: {done.get('error')}")
            timings[side].append(elapsed)
            results[side].append(done["result"])
            best = done["result"]["best"]
            say(f"  {side}: {elapsed:.2f}s, best hard {best['hard']} soft {best['soft']}")

        start_workers("w1", "w2")
        _warm_up(client, jobs=2)
        say(
            f"{repeats} round(s) of {job['islands']} islands x {job['epochs']} epochs x {job['generations']} "
            "generations, 1 worker then 2 workers in turn"
        )
        for _ in range(repeats):
            consume("w2", False)
            timed("1 worker")
            consume("w2", True)
            timed("2 workers")
        for mode in MODES:
            say(f"quality mode {mode} on 2 workers")
            started = time.perf_counter()
            submitted = client.submit("timetable", {**payload, "quality_mode": mode, "seed": 1, **mode_overrides})
            done = client.wait(submitted["id"], timeout=JOB_TIMEOUT)
            if done["status"] != "succeeded":
                raise BenchError(f"the {mode} timetable job {done['status']}: {done.get('error')}")
            best = done["result"]["best"]
            modes[mode] = {
                "hard": best["hard"],
                "soft": best["soft"],
                "evaluations": done["result"]["evaluations"],
                "seconds": round(time.perf_counter() - started, 3),
            }
            say(f"  {mode}: hard {best['hard']} soft {best['soft']} in {modes[mode]['seconds']:.2f}s")
        say("stopping workers and the broker")
    say("the same job without Celery, in this process")
    started = time.perf_counter()
    results["local"] = [solve(instance, **job, processes=0)]
    sequential = time.perf_counter() - started
    ceiling = _machine_ceiling(instance, job, say)
    return _report(instance.summary(), job, timings, results, sequential, ceiling, modes, load)


def _machine_ceiling(instance: Any, job: dict[str, Any], say: Callable[[str], None]) -> float:
    """What two cores give this very computation without any queue: one island epoch alone,
    then two at once, in two warm local processes (2 x alone / together)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from modelq.workloads.timetable.inputs import resolve_config

    config = resolve_config(job["quality_mode"], **{k: v for k, v in job.items() if k != "quality_mode"})
    say("machine ceiling: one island epoch alone, then two at once, in 2 local processes")
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(_timed_epoch, [instance] * 2, [config] * 2, [0, 1]))  # warm: imports, tables
        alone = sum(pool.submit(_timed_epoch, instance, config, i).result() for i in range(2)) / 2
        started = time.perf_counter()
        list(pool.map(_timed_epoch, [instance] * 2, [config] * 2, [0, 1]))
        together = time.perf_counter() - started
    return 2 * alone / together


def _timed_epoch(instance: Any, config: Any, island: int) -> float:
    from modelq.workloads.timetable.islands import run_island_epoch

    started = time.perf_counter()
    run_island_epoch(instance, config, island, 0, None)
    return time.perf_counter() - started


def _start(
    stack: ExitStack, home: Path, say: Callable[[str], None], concurrency: int | None = 1
) -> tuple[Any, Callable, Callable]:
    """The broker, a client, and functions that start workers (``concurrency`` processes each; None: the
    worker's default, one per core) and turn a worker's consumption of the cpu queue on or off."""
    from modelq.broker import EmbeddedRedis
    from modelq.celery_app import create_celery_app
    from modelq.client import Client

    say(f"starting the embedded Redis under {home}")
    embedded = EmbeddedRedis(home)
    embedded.ensure_running()
    stack.callback(embedded.stop)
    # One island per process: no BLAS thread pools competing for the two cores.
    env = child_env(home, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    app = create_celery_app(hermetic_settings(home), start_broker=True)
    stack.callback(release_results, app)
    app.modelq.store  # noqa: B018 - migrate the job store before the workers start
    client = Client.in_process(app=app)

    def start_workers(*names: str) -> None:
        hostnames = [f"{name}@modelq-bench" for name in names]
        each = f"{concurrency} process(es)" if concurrency else "one process per core"
        say(f"starting workers {', '.join(hostnames)} (cpu queue, prefork, {each} each)")
        children = [
            Child(
                f"worker {name}",
                worker_command("cpu", hostname, pool="prefork", concurrency=concurrency or None),
                env=env,
                cwd=home,
                log=home / f"{name}.log",
            )
            for name, hostname in zip(names, hostnames, strict=True)
        ]
        stack.callback(_stop_all, children)
        pending = set(hostnames)

        def answered() -> bool:
            for reply in app.control.ping(destination=sorted(pending), timeout=0.5) or []:
                pending.difference_update(reply)
            return not pending

        def alive() -> None:
            for child in children:
                child.ensure_alive()

        wait_until(
            answered, timeout=WORKER_START_TIMEOUT, what="the workers to answer a ping", interval=0.05, check=alive
        )

    def consume(name: str, on: bool) -> None:
        # Both workers stay up; the second one stops or resumes taking cpu jobs, so the
        # 1-worker and 2-worker runs can alternate and share whatever noise the machine has.
        hostname = f"{name}@modelq-bench"
        control = app.control.add_consumer if on else app.control.cancel_consumer
        replies = control("cpu", destination=[hostname], reply=True, timeout=5.0) or []
        if not any(hostname in reply for reply in replies):
            raise BenchError(f"{hostname} did not answer {'add' if on else 'cancel'}_consumer")

    return client, start_workers, consume


def _stop_all(children: list[Child]) -> None:
    """SIGTERM every worker first, then wait for each: their warm shutdowns overlap."""
    for child in children:
        if child.alive():
            child.proc.send_signal(signal.SIGTERM)
    for child in children:
        child.stop()


def _warm_up(client: Any, jobs: int = 1) -> None:
    """Small jobs, so each worker process has imported numpy and built its tables before timing."""
    from modelq.workloads.timetable.generate import sample

    ids = [
        client.submit(
            "timetable",
            {"ctt": sample("small"), "quality_mode": "fast", "islands": 2, "epochs": 1, "generations": 2, "seed": i},
        )["id"]
        for i in range(jobs)
    ]
    for job_id in ids:
        done = client.wait(job_id, timeout=JOB_TIMEOUT)
        if done["status"] != "succeeded":
            raise BenchError(f"the warm-up timetable job {done['status']}: {done.get('error')}")


def _report(
    instance: dict[str, Any],
    job: dict[str, Any],
    timings: dict[str, list[float]],
    results: dict[str, list[dict]],
    sequential: float,
    ceiling: float,
    modes: dict[str, dict],
    load: float,
) -> Report:
    one, two = min(timings["1 worker"]), min(timings["2 workers"])
    speedup = round(one / two, 3)
    efficiency = round(speedup / 2, 3)  # from the reported speedup, so the two figures agree
    every = [r for side in results.values() for r in side]
    same = all(
        {k: v for k, v in r.items() if k != "ran_on"} == {k: v for k, v in every[0].items() if k != "ran_on"}
        for r in every
    )
    evaluations = every[0]["evaluations"]
    best = every[0]["best"]
    figures: dict[str, Any] = {
        "scenario": "timetable",
        "speedup": speedup,
        "efficiency": efficiency,
        "one_worker_seconds": round(one, 3),
        "two_workers_seconds": round(two, 3),
        "runs": {side: [round(t, 3) for t in ts] for side, ts in timings.items()},
        "machine_ceiling": round(ceiling, 3),
        "speedup_of_ceiling": round(speedup / ceiling, 3),
        "local_sequential_seconds": round(sequential, 3),
        "queue_overhead_ratio": round(one / sequential, 3),
        "evaluations": evaluations,
        "equal_evaluations": all(r["evaluations"] == evaluations for r in every),
        "same_result": same,
        "best": {"hard": best["hard"], "soft": best["soft"]},
        "modes": modes,
        "instance": instance,
        "job": job,
        "load_average_at_start": round(load, 2),
        "seed_baseline": dict(SEED_BASELINE),
        "target": dict(TARGET),
        "meets_target": {"speedup": speedup >= TARGET["speedup_min"]},
        "broker": "embedded redis (unix socket)",
        "workers": "2 x modelq worker -Q cpu --pool prefork -c 1 (the second one off for the 1-worker runs)",
    }
    met = "[green]yes[/green]" if figures["meets_target"]["speedup"] else "[red]no[/red]"
    rows = [
        ["1 worker", fmt(one, " s"), "1.00x", "100 %", "", ""],
        [
            "2 workers",
            fmt(two, " s"),
            fmt(speedup, "x"),
            f"{efficiency * 100:.0f} %",
            f">= {TARGET['speedup_min']}x",
            met,
        ],
        ["machine ceiling (no queue)", "", fmt(ceiling, "x"), f"{ceiling * 50:.0f} %", "", ""],
        ["local, sequential", fmt(sequential, " s"), "", "", "", ""],
        ["seed (8 workers)", "", f"{SEED_BASELINE['speedup']}x", f"{SEED_BASELINE['efficiency'] * 100:.0f} %", "", ""],
    ]
    for mode, m in modes.items():
        rows.append([f"mode {mode}", fmt(m["seconds"], " s"), "", "", f"hard {m['hard']}", f"soft {m['soft']}"])
    return Report(
        scenario="timetable",
        title="P6: timetable islands, 2 workers vs 1 on 2 cores (same evaluations)",
        figures=figures,
        columns=["", "seconds", "speedup", "efficiency", "target", "met"],
        rows=rows,
        panels=[
            Panel("wall time, same job", "seconds", {"1 worker": one, "2 workers": two, "local seq.": sequential}),
            Panel(
                "speedup on 2 cores",
                "x",
                {"2 workers": speedup, "machine ceiling": ceiling, "ideal": 2.0},
                target=TARGET["speedup_min"],
                target_label="P6: >= 1.8x",
            ),
            Panel("best soft score per mode", "soft penalty", {mode: float(m["soft"]) for mode, m in modes.items()}),
        ],
        notes=[
            (
                f"{instance['name']}: {instance['courses']} courses, {instance['lectures']} lectures, "
                f"{instance['rooms']} rooms, {instance['days']}x{instance['periods_per_day']} periods; job: "
                f"{job['islands']} islands x {job['epochs']} epochs x {job['generations']} generations, population "
                f"{job['population']}; {evaluations} evaluations per run, same result on every side: {same}. Best of "
                f"{len(timings['1 worker'])} alternating run(s) per side. Machine ceiling: one island epoch alone vs two "
                f"at once in two local processes. Load average at start: {load:.2f}. Modes run on the 2 workers."
            ),
        ],
    )

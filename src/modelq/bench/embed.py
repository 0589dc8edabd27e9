"""Scenario ``embed`` (target P3): sentences/s through the queue, many small concurrent requests.

Three ways to embed the same N sentences with the bundled all-MiniLM-L6-v2, in one run:

* **in-process**: ``model.encode(sentences, batch_size=32)`` in this process (the ceiling);
* **modelq batched**: N ``embed`` jobs of one sentence each, submitted at once, to a worker
  with a threads pool (``-c 32``): concurrent requests share forward passes (``batch_call``);
* **naive**: the same N jobs to a worker that runs one request per forward pass
  (``MODELQ_BATCH_MAX_SIZE=1``, one thread): one Celery task per request, no batching.

``batched_vs_inprocess`` = batched sentences/s / in-process; ``batched_vs_naive`` =
batched / naive. Jobs go to the ``gpu`` queue (a threads pool), on each worker in turn.
"""

from __future__ import annotations

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
from modelq.bench.warm import OFFLINE, bundled_minilm_dir, start_model_worker

TARGET = {"batched_vs_inprocess_min": 0.8, "batched_vs_naive_min": 3.0}
JOB_TIMEOUT = 300.0


def _sentences(n: int) -> list[str]:
    subjects = ["The cat", "A courier", "Our model", "The committee", "A telescope", "The queue"]
    verbs = ["watches", "delivers", "ranks", "approves", "observes", "drains"]
    objects = ["the garden", "forty parcels", "every document", "the budget", "a distant galaxy", "its backlog"]
    return [f"{subjects[i % 6]} {verbs[(i // 6) % 6]} {objects[(i // 36) % 6]} (#{i})." for i in range(n)]


def _through_queue(stack: ExitStack, home: Path, sentences: list[str], *, concurrency: int, batch_max: int,
                   hostname: str, say: Callable[[str], None]) -> float:  # fmt: skip
    env = {"MODELQ_BATCH_MAX_SIZE": str(batch_max), "MODELQ_BATCH_MAX_WAIT_MS": "5"}
    worker = start_model_worker(stack, home, hostname=hostname, models={}, concurrency=concurrency, env=env,
                                queues="gpu", say=say)  # fmt: skip
    client = worker.client
    say(f"{hostname}: warm-up (loads the model)")
    client.run("embed", {"input": ["warm up"]}, timeout=JOB_TIMEOUT)
    say(f"{hostname}: {len(sentences)} one-sentence jobs at once")
    started = time.perf_counter()
    ids = [client.submit("embed", {"input": [s]})["id"] for s in sentences]
    for job_id in ids:
        job = client.wait(job_id, timeout=JOB_TIMEOUT)
        if job["status"] != "succeeded":
            raise BenchError(f"embed job {job_id} {job['status']}: {job.get('error')}")
    return len(sentences) / (time.perf_counter() - started)


def run(*, settings: Any = None, quick: bool = False, say: Callable[[str], None] = lambda _m: None) -> Report:
    from modelq.models.loaders import load_sentence_transformer
    from modelq.models.registry import ModelSpec

    for key, value in OFFLINE.items():
        os.environ.setdefault(key, value)
    n = 128 if quick else 512
    sentences = _sentences(n)

    say("in-process: encode(batch_size=32)")
    model = load_sentence_transformer(ModelSpec(name="minilm", loader="sentence-transformers", source=bundled_minilm_dir()))
    model.encode(sentences[:32], batch_size=32)
    started = time.perf_counter()
    model.encode(sentences, batch_size=32, normalize_embeddings=True, show_progress_bar=False)
    inprocess = n / (time.perf_counter() - started)
    del model

    rates: dict[str, float] = {}
    for side, concurrency, batch_max in (("batched", 32, 32), ("naive", 1, 1)):
        with ExitStack() as stack:
            home = Path(tempfile.mkdtemp(prefix=f"modelq-bench-embed-{side}-"))
            stack.callback(shutil.rmtree, home, ignore_errors=True)
            rates[side] = _through_queue(stack, home, sentences, concurrency=concurrency, batch_max=batch_max,
                                         hostname=f"embed-{side}@modelq-bench", say=say)  # fmt: skip

    figures: dict[str, Any] = {
        "sentences": n,
        "inprocess_per_s": round(inprocess, 1),
        "batched_per_s": round(rates["batched"], 1),
        "naive_per_s": round(rates["naive"], 1),
        "batched_vs_inprocess": round(rates["batched"] / inprocess, 3),
        "batched_vs_naive": round(rates["batched"] / rates["naive"], 3),
        "target": TARGET,
    }
    figures["meets_target"] = {
        "batched_vs_inprocess": figures["batched_vs_inprocess"] >= TARGET["batched_vs_inprocess_min"],
        "batched_vs_naive": figures["batched_vs_naive"] >= TARGET["batched_vs_naive_min"],
    }
    rows = [
        ["in-process encode(batch_size=32)", fmt(inprocess, "", 1)],
        ["modelq, batched (threads -c 32)", fmt(rates["batched"], "", 1)],
        ["one task per request, no batching", fmt(rates["naive"], "", 1)],
    ]
    panel = Panel(title="embeddings", ylabel="sentences/s",
                  bars={"in-process": inprocess, "modelq batched": rates["batched"], "naive": rates["naive"]},
                  target=TARGET["batched_vs_inprocess_min"] * inprocess, target_label="P3 floor (0.8x in-process)")  # fmt: skip
    notes = [f"batched / in-process = {figures['batched_vs_inprocess']}x (P3 >= 0.8); "
             f"batched / naive = {figures['batched_vs_naive']}x (P3 >= 3)"]  # fmt: skip
    return Report(scenario="embed", title=f"P3: {n} one-sentence embed requests", figures=figures,
                  columns=["side", "sentences/s"], rows=rows, panels=[panel], notes=notes)  # fmt: skip

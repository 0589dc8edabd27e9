"""Scenario ``embed`` (target P3): sentences/s through the queue, many small concurrent requests.

Three ways to embed the same N varied sentences (1-40 words; English, Russian, Chinese, Arabic,
emoji) with the bundled all-MiniLM-L6-v2, in one run:

* **in-process**: ``model.encode(sentences, batch_size=32)`` in this process (the ceiling);
* **modelq batched**: N ``embed`` jobs of one sentence each, submitted at once, to a worker
  with a threads pool (``-c 32``): concurrent requests share forward passes (``batch_call``);
* **naive**: the same N jobs to a worker that runs one request per forward pass
  (``MODELQ_BATCH_MAX_SIZE=1``, one thread): one Celery task per request, no batching.

``batched_vs_inprocess`` = batched sentences/s / in-process; ``batched_vs_naive`` =
batched / naive. Every job must succeed (a failed one stops the bench with its error).

Then **curves**: closed-loop clients (each sends one one-sentence request, waits for its answer,
sends the next) at 1, 8, 32 and 128 at once, against the batched worker, through the Python
client (in-process mode: the job store and broker directly) and through HTTP (``POST
/v1/embeddings`` to a ``modelq api`` subprocess). ``curves`` in the JSON holds sentences/s per
client count and path.
"""

from __future__ import annotations

import os
import random
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from modelq.bench import BenchError
from modelq.bench.report import Panel, Report, fmt
from modelq.bench.support import Child, child_env, free_port, wait_until
from modelq.bench.warm import OFFLINE, bundled_minilm_dir, start_model_worker

TARGET = {"batched_vs_inprocess_min": 0.8, "batched_vs_naive_min": 3.0}
JOB_TIMEOUT = 300.0
CLIENTS = (1, 8, 32, 128)

_WORDS = {
    "en": "the cat courier model committee telescope queue watches delivers ranks approves observes drains garden "
    "forty parcels every document budget distant galaxy backlog quarterly revenue grew".split(),
    "ru": "быстрая коричневая лиса прыгает через ленивую собаку отчёт бюджет модель очередь документ".split(),
    "zh": list("敏捷的棕色狐狸跳过了懒狗今天天气很好模型队列文件"),
    "ar": "الثعلب البني السريع يقفز فوق الكلب الكسول التقرير الميزانية".split(),
}
_EMOJI = ["🚀", "🔥", "🎉", "🐈", "📄"]


def _sentences(n: int, seed: int = 0) -> list[str]:
    """``n`` sentences of 1-40 words, mostly English, some Russian, Chinese, Arabic, a few with emoji."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        language = rng.choices(list(_WORDS), weights=[70, 10, 10, 10])[0]
        words = [rng.choice(_WORDS[language]) for _ in range(rng.randint(1, 40))]
        text = ("" if language == "zh" else " ").join(words)
        if i % 10 == 0:
            text += f" {rng.choice(_EMOJI)}"
        out.append(text)
    return out


def _through_queue(
    stack: ExitStack,
    home: Path,
    sentences: list[str],
    *,
    concurrency: int,
    batch_max: int,
    hostname: str,
    say: Callable[[str], None],
) -> tuple[float, Any]:
    """Sentences/s for a burst of one-sentence jobs submitted at once; and the worker, still running."""
    env = {"MODELQ_BATCH_MAX_SIZE": str(batch_max), "MODELQ_BATCH_MAX_WAIT_MS": "5"}
    worker = start_model_worker(
        stack, home, hostname=hostname, models={}, concurrency=concurrency, env=env, queues="gpu", say=say
    )
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
    return len(sentences) / (time.perf_counter() - started), worker


def closed_loop(clients: int, sentences: list[str], call: Callable[[str], None]) -> float:
    """Sentences/s when ``clients`` threads each send one sentence, wait for it, then send the next."""
    lock = threading.Lock()
    todo = iter(sentences)
    errors: list[BaseException] = []

    def client() -> None:
        while not errors:
            with lock:
                sentence = next(todo, None)
            if sentence is None:
                return
            try:
                call(sentence)
            except BaseException as exc:  # noqa: BLE001 - reported below, the run stops
                errors.append(exc)

    threads = [threading.Thread(target=client, name=f"bench-client-{i}") for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise BenchError(f"{clients} clients: {errors[0]}")
    return len(sentences) / (time.perf_counter() - started)


def _start_api(stack: ExitStack, home: Path, say: Callable[[str], None]) -> str:
    """A ``modelq api`` subprocess on this home (its own process, as users run it); its base URL."""
    import httpx

    port = free_port()
    say(f"starting modelq api on 127.0.0.1:{port}")
    child = Child(
        "modelq api",
        [sys.executable, "-m", "modelq", "api", "--host", "127.0.0.1", "--port", str(port)],
        env=child_env(home, **OFFLINE),
        cwd=home,
        log=home / "api.log",
    )
    stack.callback(child.stop)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ready, timeout=60, what="modelq api to answer /healthz", interval=0.1, check=child.ensure_alive)
    return url


def _curves(
    stack: ExitStack,
    home: Path,
    worker: Any,
    sentences: list[str],
    clients: tuple[int, ...],
    say: Callable[[str], None],
) -> dict[str, dict[str, float]]:
    import httpx

    url = _start_api(stack, home, say)
    limits = httpx.Limits(max_connections=max(clients) * 2, max_keepalive_connections=max(clients) * 2)
    http = stack.enter_context(httpx.Client(base_url=url, timeout=JOB_TIMEOUT, limits=limits))

    def by_client(sentence: str) -> None:
        worker.client.run("embed", {"input": [sentence]}, timeout=JOB_TIMEOUT)

    def by_http(sentence: str) -> None:
        response = http.post("/v1/embeddings", json={"input": sentence, "model": "minilm"})
        if response.status_code != 200:
            raise BenchError(f"POST /v1/embeddings answered {response.status_code}: {response.text[:300]}")

    by_http(sentences[0])  # warm the API's own connections
    curves: dict[str, dict[str, float]] = {"client": {}, "http": {}}
    for n in clients:
        # enough requests that every client sends several; fewer for one client (it is slow by nature)
        chunk = sentences[: max(64, min(len(sentences), 4 * n))]
        for path, call in (("client", by_client), ("http", by_http)):
            say(f"curves: {n} closed-loop client(s) through {path}, {len(chunk)} sentences")
            curves[path][str(n)] = round(closed_loop(n, chunk, call), 1)
    return curves


def run(*, settings: Any = None, quick: bool = False, say: Callable[[str], None] = lambda _m: None) -> Report:
    from modelq.models.loaders import load_sentence_transformer
    from modelq.models.registry import ModelSpec

    for key, value in OFFLINE.items():
        os.environ.setdefault(key, value)
    n = 128 if quick else 512
    sentences = _sentences(n)
    clients = (1, 8) if quick else CLIENTS

    say("in-process: encode(batch_size=32)")
    model = load_sentence_transformer(
        ModelSpec(name="minilm", loader="sentence-transformers", source=bundled_minilm_dir())
    )
    model.encode(sentences[:32], batch_size=32)
    started = time.perf_counter()
    model.encode(sentences, batch_size=32, normalize_embeddings=True, show_progress_bar=False)
    inprocess = n / (time.perf_counter() - started)
    del model

    rates: dict[str, float] = {}
    curves: dict[str, dict[str, float]] = {}
    for side, concurrency, batch_max in (("batched", 32, 32), ("naive", 1, 1)):
        with ExitStack() as stack:
            home = Path(tempfile.mkdtemp(prefix=f"modelq-bench-embed-{side}-"))
            stack.callback(shutil.rmtree, home, ignore_errors=True)
            rates[side], worker = _through_queue(
                stack,
                home,
                sentences,
                concurrency=concurrency,
                batch_max=batch_max,
                hostname=f"embed-{side}@modelq-bench",
                say=say,
            )
            if side == "batched":
                curves = _curves(stack, home, worker, _sentences(n, seed=1), clients, say)

    figures: dict[str, Any] = {
        "sentences": n,
        "inprocess_per_s": round(inprocess, 1),
        "batched_per_s": round(rates["batched"], 1),
        "naive_per_s": round(rates["naive"], 1),
        "batched_vs_inprocess": round(rates["batched"] / inprocess, 3),
        "batched_vs_naive": round(rates["batched"] / rates["naive"], 3),
        "curves": curves,
        "target": TARGET,
    }
    figures["meets_target"] = {
        "batched_vs_inprocess": figures["batched_vs_inprocess"] >= TARGET["batched_vs_inprocess_min"],
        "batched_vs_naive": figures["batched_vs_naive"] >= TARGET["batched_vs_naive_min"],
    }
    rows = [
        ["in-process encode(batch_size=32)", fmt(inprocess, "", 1)],
        ["modelq, batched (threads -c 32), burst", fmt(rates["batched"], "", 1)],
        ["one task per request, no batching, burst", fmt(rates["naive"], "", 1)],
    ]
    for path, label in (("client", "Python client"), ("http", "HTTP /v1/embeddings")):
        for count, rate in curves.get(path, {}).items():
            rows.append([f"{count} closed-loop client(s), {label}", fmt(rate, "", 1)])
    panels = [
        Panel(
            title="embeddings",
            ylabel="sentences/s",
            bars={"in-process": inprocess, "modelq batched": rates["batched"], "naive": rates["naive"]},
            target=TARGET["batched_vs_inprocess_min"] * inprocess,
            target_label="P3 floor (0.8x in-process)",
        )
    ]
    for path, label in (("client", "Python client"), ("http", "HTTP")):
        if curves.get(path):
            panels.append(
                Panel(
                    title=f"{label}: closed-loop clients",
                    ylabel="sentences/s",
                    bars={f"{count} clients": rate for count, rate in curves[path].items()},
                    target=inprocess,
                    target_label="in-process",
                )
            )
    notes = [
        f"batched / in-process = {figures['batched_vs_inprocess']}x (P3 >= 0.8); "
        f"batched / naive = {figures['batched_vs_naive']}x (P3 >= 3)"
    ]
    return Report(
        scenario="embed",
        title=f"P3: {n} one-sentence embed requests",
        figures=figures,
        columns=["side", "sentences/s"],
        rows=rows,
        panels=panels,
        notes=notes,
    )

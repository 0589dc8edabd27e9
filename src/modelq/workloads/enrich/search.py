"""Rank a document's snippets against a query vector (cosine similarity over its ``embeddings.npy``).

The query is embedded by an ``embed`` job (the process that answers a search never loads a
model); ranking is one matrix product over the stored unit vectors, done here with numpy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modelq.errors import MissingDependency


def best_snippets(
    vectors_path: Path, query: list[float], snippets: list[dict[str, Any]], k: int
) -> list[dict[str, Any]]:
    """The ``k`` snippets closest to ``query``, best first, each with its ``score`` (cosine similarity).

    Args:
        vectors_path: the job's ``embeddings.npy`` (float32, one unit vector per snippet, in order).
        query: the query's vector from the same model.
        snippets: the document's snippets, in the order of the vectors.
        k: how many to return at most.
    """
    try:
        import numpy as np
    except ImportError as exc:
        raise MissingDependency("numpy", "pdf") from exc
    matrix = np.load(vectors_path, allow_pickle=False)
    if matrix.shape[0] != len(snippets):
        raise RuntimeError(f"{vectors_path.name} has {matrix.shape[0]} vectors for {len(snippets)} snippets")
    q = np.asarray(query, dtype=np.float32)
    q /= np.linalg.norm(q) or 1.0
    scores = matrix @ q
    order = np.argsort(-scores, kind="stable")[:k]
    return [{**snippets[i], "score": float(scores[i])} for i in order]

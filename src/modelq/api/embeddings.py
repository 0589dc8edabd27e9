"""Drop-in endpoints: OpenAI-compatible ``POST /v1/embeddings`` and ``POST /v1/rerank`` (Cohere/Jina shape).

Each request is a job like any other (a record, a queue, a worker, batching with
other requests); the endpoint waits for it and answers in the shape clients expect.
"""

from __future__ import annotations

import base64
import math
from array import array
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from modelq.api.auth import owner_of
from modelq.api.errors import responses as error_responses
from modelq.api.schemas import JsonObject
from modelq.errors import InvalidInput, JobFailed, NameNotFound, failure_of_record
from modelq.jobs.dispatch import INTERACTIVE
from modelq.workloads import embed as embedding
from modelq.workloads import rerank as reranking

router = APIRouter(tags=["embeddings"], responses=error_responses(404, 429, 500, 503, 504))

#: The longest a synchronous endpoint waits for its job.
SYNC_TIMEOUT_SECONDS = 300.0


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    input: str | list[str] | list[int] | list[list[int]]
    model: str = Field(default=embedding.DEFAULT_MODEL, min_length=1)
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None


class RerankRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    query: str = Field(min_length=1)
    documents: list[str | JsonObject] = Field(min_length=1)
    model: str | None = None
    top_n: int | None = Field(default=None, ge=1)
    return_documents: bool = False


def run_job(request: Request, task: str, data: dict[str, Any]) -> dict[str, Any]:
    """Submit a job and wait for its result; a failed job becomes the matching HTTP error."""
    service = request.app.state.jobs
    owner = owner_of(request)
    job = service.submit(task, data, owner=owner or "", priority=INTERACTIVE)  # a client waits: ahead of batch jobs
    done = service.wait(job["id"], SYNC_TIMEOUT_SECONDS, owner)
    if done["status"] == "succeeded":
        return done["result"]
    failure = failure_of_record(done)
    if failure["type"] in ("ModelLoadError", "ModelNotFound"):
        raise _model_error(failure["message"])
    if failure["type"] == "InvalidInput":
        raise InvalidInput(failure["message"])
    raise JobFailed(job["id"], done["status"], done.get("error") or done["status"])


def _model_error(message: str) -> NameNotFound:
    return NameNotFound(message, field="model")


def _as_base64(vector: list[float]) -> str:
    return base64.b64encode(array("f", vector).tobytes()).decode()


def _shorten(vector: list[float], dimensions: int) -> list[float]:
    cut = vector[:dimensions]
    norm = math.sqrt(sum(v * v for v in cut)) or 1.0
    return [v / norm for v in cut]


@router.post("/v1/embeddings")
async def create_embeddings(body: EmbeddingRequest, request: Request) -> dict[str, Any]:
    """OpenAI-compatible embeddings (works with the official `openai` client)."""
    if isinstance(body.input, list) and body.input and not isinstance(body.input[0], str):
        raise InvalidInput("input must be text: token arrays are not supported", field="input")
    texts = embedding.check_texts(body.input, request.app.state.settings)
    result = await run_in_threadpool(run_job, request, "embed", {"input": texts, "model": body.model})
    vectors = result["embeddings"]
    if body.dimensions is not None:
        if body.dimensions > result["dimensions"]:
            raise InvalidInput(
                f"dimensions must be at most {result['dimensions']} for {body.model!r}", field="dimensions"
            )
        vectors = [_shorten(v, body.dimensions) for v in vectors]
    encode = _as_base64 if body.encoding_format == "base64" else (lambda v: v)
    tokens = result["usage"]["prompt_tokens"]
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": encode(v)} for i, v in enumerate(vectors)],
        "model": body.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


@router.post("/v1/rerank")
async def create_rerank(body: RerankRequest, request: Request) -> dict[str, Any]:
    """Rerank documents for a query (Cohere/Jina shape): `{results: [{index, relevance_score}]}`."""
    reranking.check_request(body.query, body.documents, body.top_n, request.app.state.settings)  # 422 before a job
    data = body.model_dump()
    return await run_in_threadpool(run_job, request, "rerank", data)

"""Documents: upload a PDF and it is enriched (``POST /v1/documents``), read it back, search it.

* ``POST /v1/documents`` — multipart field ``file`` (a PDF), optional form fields ``model``,
  ``snippet_chars``, ``overlap``, ``render_scale``; answers 202 with the ``enrich`` job's record
  (the document's id is the job's id). Empty files, files that are not PDFs and files over
  ``MODELQ_MAX_PDF_BYTES`` / ``MODELQ_MAX_PDF_PAGES`` answer 422 naming ``file``; an encrypted or
  damaged PDF is accepted and its job fails saying why.
* ``GET /v1/documents/{id}[?wait=S]`` — 202 with status and progress while queued or running;
  200 once finished: the snippets (page, character range, text) and page image links, or the error.
* ``GET /v1/documents/{id}/search?q=&k=5`` — the ``k`` snippets most similar to ``q``, best first;
  the query is embedded by an ``embed`` job with the document's model, so this process loads no model.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from modelq.api.auth import owner_of
from modelq.api.embeddings import run_job
from modelq.api.errors import responses as error_responses
from modelq.api.schemas import JobOut, Progress
from modelq.errors import DocumentNotReady, InvalidInput, JobNotFound, JobTimeout
from modelq.jobs.status import JobStatus
from modelq.workloads.enrich import EMBEDDINGS, TASK, submit_document
from modelq.workloads.enrich.search import best_snippets

router = APIRouter(tags=["documents"])

#: The longest ``GET /v1/documents/{id}?wait=`` holds the connection.
MAX_WAIT_SECONDS = 30.0
MAX_RESULTS = 100


class DocumentOut(BaseModel):
    """A document: its state, and once enriched its snippets and page images (see ``document_view``)."""

    model_config = ConfigDict(extra="allow")

    id: str
    status: str
    filename: str | None = None
    progress: Progress
    queue_position: int | None = Field(default=None, description="while queued")
    pages: int | None = Field(default=None, description="once enriched, as are snippets, images, embeddings and model")
    model: str | None = None
    snippets: list[dict[str, Any]] | None = None
    error: str | None = Field(default=None, description="why its enrich job failed")


def _document_job(request: Request, document_id: str, wait: float = 0) -> dict[str, Any]:
    """The ``enrich`` job behind a document id (waiting up to ``wait`` s for it to finish)."""
    service = request.app.state.jobs
    job = service.get(document_id, owner_of(request))
    if job["task"] != TASK:
        raise JobNotFound(document_id)  # a job, but not a document
    if wait > 0 and not JobStatus(job["status"]).finished:
        try:
            job = service.wait(document_id, wait, owner_of(request))
        except JobTimeout:
            job = service.get(document_id, owner_of(request))
    return job


def document_view(job: dict[str, Any]) -> dict[str, Any]:
    """What a client sees of a document: its state, and once enriched its snippets and page images."""
    view: dict[str, Any] = {
        "id": job["id"],
        "status": job["status"],
        "filename": (job["input"] or {}).get("filename"),
        "progress": job["progress"],
    }
    if job["status"] == JobStatus.QUEUED.value:
        view["queue_position"] = job.get("queue_position")
    if job["status"] == JobStatus.SUCCEEDED.value:
        result = job["result"]
        view.update({key: result[key] for key in ("pages", "model", "snippets", "images", "embeddings")})
    elif job.get("error"):
        view["error"] = job["error"]
    return view


@router.post("/v1/documents", status_code=202, response_model=JobOut, responses=error_responses(429, 503))
async def upload_document(
    request: Request,
    file: UploadFile = File(..., description="a PDF document"),
    model: str | None = Form(None, description="embedding model (default minilm)"),
    snippet_chars: int | None = Form(None, description="longest snippet in characters (default 800)"),
    overlap: int | None = Form(None, description="characters a snippet repeats from the previous one (default 100)"),
    render_scale: float | None = Form(None, description="page image scale; 1 = 72 dpi (default 1)"),
) -> JSONResponse:
    """Upload a PDF: its `enrich` job starts at once; the document's id is the job's id."""
    data = await file.read()
    job = await run_in_threadpool(
        submit_document,
        request.app.state.jobs,
        data,
        filename=file.filename,
        owner=owner_of(request) or "",
        model=model,
        snippet_chars=snippet_chars,
        overlap=overlap,
        render_scale=render_scale,
    )
    return JSONResponse(JobOut(**job).model_dump(mode="json"), status_code=202)


@router.get(
    "/v1/documents/{document_id}",
    response_model=DocumentOut,
    responses={202: {"model": DocumentOut, "description": "still being enriched"}, **error_responses(404)},
)
async def get_document(
    document_id: str,
    request: Request,
    wait: float = Query(
        0, ge=0, le=MAX_WAIT_SECONDS, allow_inf_nan=False, description="long-poll: wait up to this many seconds"
    ),
) -> JSONResponse:
    """A document: 202 with progress while it is enriched, 200 with its snippets and page images once done."""
    job = await run_in_threadpool(_document_job, request, document_id, wait)
    finished = JobStatus(job["status"]).finished
    return JSONResponse(document_view(job), status_code=200 if finished else 202)


@router.get("/v1/documents/{document_id}/search", responses=error_responses(404, 409, 429, 500, 503, 504))
async def search_document(
    document_id: str,
    request: Request,
    q: str = Query(..., description="what to look for"),
    k: int = Query(5, ge=1, le=MAX_RESULTS, description="how many snippets to return"),
) -> dict[str, Any]:
    """The snippets of a document most similar to `q`, best first (cosine similarity of embeddings)."""
    if not q.strip():
        raise InvalidInput("q must be a non-empty search text", field="q")
    job = await run_in_threadpool(_document_job, request, document_id)
    _require_enriched(job)
    result = job["result"]
    query = await run_in_threadpool(run_job, request, "embed", {"input": [q], "model": result["model"]})
    path = await run_in_threadpool(request.app.state.jobs.artifact_path, document_id, EMBEDDINGS, owner_of(request))
    hits = await run_in_threadpool(best_snippets, path, query["embeddings"][0], result["snippets"], k)
    return {"query": q, "model": result["model"], "results": hits}


def _require_enriched(job: dict[str, Any]) -> None:
    status = job["status"]
    if status == JobStatus.SUCCEEDED.value:
        return
    if status == JobStatus.FAILED.value:
        detail = f"its enrich job failed ({job.get('error')}); upload a readable PDF"
    elif status == JobStatus.CANCELLED.value:
        detail = "its enrich job was cancelled; upload it again"
    else:
        at = job["progress"].get("message") or f"{job['progress']['fraction']:.0%}"
        detail = f"it is still being enriched ({at}); search it once GET /v1/documents/{job['id']} answers 200"
    raise DocumentNotReady(job["id"], status, detail)

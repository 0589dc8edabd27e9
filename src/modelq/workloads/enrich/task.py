"""The ``enrich`` task: a PDF upload becomes snippets with page numbers, page images and embeddings.

The task runs on the ``gpu`` queue, like ``embed`` and for the same reason: it runs the embedding
model, and that queue's threads pool keeps one warm copy of it per worker process (never loaded
in a forked child), batches its snippets with other embedding requests running at the same time,
and routes jobs to ``gpu.model.<model>`` so a worker that holds the model gets them. Reading the
PDF is ctypes calls into PDFium, which release the GIL.

Importing this module is cheap: pypdfium2 and numpy are imported when a job runs.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelq.errors import ArtifactNotFound, InvalidDocument, InvalidInput, MissingDependency
from modelq.jobs.artifacts import check_upload_name
from modelq.tasks import JobContext, current_job, progress, task
from modelq.workloads import embed as embedding
from modelq.workloads.enrich.pdf import PdfReader, check_pages, check_upload, open_pdf, page_count
from modelq.workloads.enrich.snippets import page_snippets

if TYPE_CHECKING:
    from modelq.jobs.service import JobService

TASK = "enrich"
DEFAULT_MODEL = embedding.DEFAULT_MODEL
DEFAULT_SNIPPET_CHARS = 800
DEFAULT_OVERLAP = 100
DEFAULT_RENDER_SCALE = 1.0
#: Bounds of a request's parameters (a 422 naming the field outside them).
MIN_SNIPPET_CHARS, MAX_SNIPPET_CHARS = 100, 10_000
MIN_RENDER_SCALE, MAX_RENDER_SCALE = 0.1, 4.0
#: The job's artifacts: one PNG per page, and the snippets' vectors (float32, one row per snippet).
PAGE_IMAGE = "page-{:04d}.png"
EMBEDDINGS = "embeddings.npy"
#: Share of the progress bar for reading pages; embedding takes the rest.
PAGES_SHARE = 0.5


def artifact_url(job_id: str, name: str) -> str:
    return f"/v1/jobs/{job_id}/artifacts/{name}"


# Parameters ------------------------------------------------------------------------------


def _int(value: Any, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInput(f"{field} must be an integer from {low} to {high}, got {value!r}", field=field)
    return value


def check_params(data: dict[str, Any]) -> dict[str, Any]:
    """An ``enrich`` job's input, checked and with defaults filled in.

    Raises:
        InvalidInput: naming the field (``pdf``, ``model``, ``snippet_chars``, ``overlap``, ``render_scale``).
    """
    model = data.get("model") or DEFAULT_MODEL
    if not isinstance(model, str) or len(model) > 1000:
        raise InvalidInput("model must be an embedding model's name, path or hub id", field="model")
    size = data.get("snippet_chars")
    size = DEFAULT_SNIPPET_CHARS if size is None else _int(size, "snippet_chars", MIN_SNIPPET_CHARS, MAX_SNIPPET_CHARS)
    overlap = data.get("overlap")
    overlap = min(DEFAULT_OVERLAP, size // 2) if overlap is None else _int(overlap, "overlap", 0, size // 2)
    scale = data.get("render_scale")
    scale = DEFAULT_RENDER_SCALE if scale is None else scale
    number = isinstance(scale, (int, float)) and not isinstance(scale, bool)
    if not number or not MIN_RENDER_SCALE <= scale <= MAX_RENDER_SCALE:
        raise InvalidInput(
            f"render_scale must be a number from {MIN_RENDER_SCALE} to {MAX_RENDER_SCALE} (1 = 72 dpi), got {scale!r}",
            field="render_scale",
        )
    filename = data.get("filename")
    if filename is not None and not isinstance(filename, str):
        raise InvalidInput("filename must be a string", field="filename")
    return {
        "pdf": check_upload_name(data.get("pdf"), field="pdf"),
        "filename": os.path.basename(filename)[:255] if filename else None,
        "model": model,
        "snippet_chars": size,
        "overlap": overlap,
        "render_scale": float(scale),
    }


def _validate(data: dict[str, Any], settings: Any) -> dict[str, Any]:
    """Checks the parameters at submit time (a 422 naming the field) and fills in the defaults,
    so the job is routed to the queue of the model it will use."""
    return check_params(data)


# Submitting an upload ------------------------------------------------------------------------


def submit_document(
    service: JobService, data: bytes, *, filename: str | None = None, owner: str = "", **params: Any
) -> dict[str, Any]:
    """Check an uploaded PDF, store it where every worker reads artifacts, and queue its ``enrich`` job.

    Args:
        service: the job service of the API (or of an in-process client).
        data: the uploaded bytes.
        filename: the name the file was uploaded under (kept in the result).
        owner: who submits it.
        **params: ``model``, ``snippet_chars``, ``overlap``, ``render_scale`` (None: the default).

    Returns:
        The job record; its id is the document's id.

    Raises:
        InvalidDocument: empty, not a PDF, or over ``max_pdf_bytes`` / ``max_pdf_pages`` (field ``file``).
        InvalidInput: a parameter out of range.
    """
    settings = service.settings
    check_upload(data, settings.max_pdf_bytes)
    placeholder = "upload-" + "0" * 64 + ".pdf"  # check the parameters before storing anything
    check_params({**params, "pdf": placeholder, "filename": filename})
    try:
        pages = page_count(data)
    except MissingDependency:  # an API without the pdf extra: the worker checks the page count
        pages = None
    if pages is not None:
        check_pages(pages, settings.max_pdf_pages)
    name = service.app.modelq.artifacts.put_upload(data, ".pdf")
    job_input = {key: value for key, value in params.items() if value is not None}
    return service.submit(TASK, {**job_input, "pdf": name, "filename": filename}, owner=owner)


# The job -------------------------------------------------------------------------------------


@task(TASK, queue="gpu", models=[DEFAULT_MODEL], model_arg="model", validate=_validate)
def enrich(
    pdf: str,
    filename: str | None = None,
    model: str = DEFAULT_MODEL,
    snippet_chars: int = DEFAULT_SNIPPET_CHARS,
    overlap: int = DEFAULT_OVERLAP,
    render_scale: float = DEFAULT_RENDER_SCALE,
) -> dict[str, Any]:
    """A PDF into snippets with page numbers, page images (PNG) and an embedding per snippet."""
    return run(check_params(dict(locals())), current_job())


def run(params: dict[str, Any], job: JobContext) -> dict[str, Any]:
    """Read every page (text, image), split the text into snippets, embed them; return the document."""
    # An encrypted, damaged, empty or too long PDF fails here, before the model is loaded.
    with open_pdf(_upload(job, params["pdf"]), job.settings.max_pdf_pages) as reader:
        progress(0.0, f"loading model {params['model']}")
        embedding.encoder(params["model"])  # a model that cannot load fails the job before any page is read
        snippets, images = _read_pages(reader, params, job)
    pages = reader.pages
    if not snippets:
        raise InvalidDocument(
            f"the PDF has no extractable text on any of its {pages} page(s) (a scan?); run OCR on "
            "it and upload it again",
            reason="no_text",
        )
    vectors = _embed([s["text"] for s in snippets], params["model"], job)
    meta = job.save_artifact(EMBEDDINGS, _npy(vectors), "application/octet-stream")
    dimensions = len(vectors[0])
    return {
        "filename": params["filename"],
        "pages": pages,
        "model": params["model"],
        "snippets": snippets,
        "images": images,
        "embeddings": {
            "name": meta["name"],
            "url": artifact_url(job.id, meta["name"]),
            "shape": [len(vectors), dimensions],
            "dtype": "float32",
        },
        "parameters": {key: params[key] for key in ("snippet_chars", "overlap", "render_scale")},
    }


def _upload(job: JobContext, name: str) -> Path:
    try:
        return job.artifacts.open_upload(name)
    except ArtifactNotFound:
        raise InvalidInput(
            f"the uploaded file {name!r} is missing from the artifact store; upload the PDF again (POST /v1/documents)",
            field="pdf",
        ) from None


def _read_pages(reader: PdfReader, params: dict[str, Any], job: JobContext) -> tuple[list[dict], list[dict]]:
    """Each page's snippets and PNG (saved as an artifact), reporting progress per page."""
    snippets: list[dict[str, Any]] = []
    images: list[dict[str, Any]] = []
    total = reader.pages
    for index in range(total):
        page = reader.read(index, params["render_scale"])
        meta = job.save_artifact(PAGE_IMAGE.format(page.number), page.png, "image/png")
        images.append(
            {
                "page": page.number,
                "name": meta["name"],
                "url": artifact_url(job.id, meta["name"]),
                "width": page.pixels[0],
                "height": page.pixels[1],
            }
        )
        for snippet in page_snippets(page.text, page.number, params["snippet_chars"], params["overlap"]):
            snippets.append({"index": len(snippets), **snippet})
        progress(PAGES_SHARE * page.number / total, f"page {page.number}/{total}")
    return snippets, images


def _embed(texts: list[str], model: str, job: JobContext) -> list[list[float]]:
    """Vectors for ``texts`` in batches (shared with other requests running now), with progress."""
    size = job.settings.batch_max_size
    vectors: list[list[float]] = []
    for start in range(0, len(texts), size):
        vectors += embedding.encode(texts[start : start + size], model, normalize=True)
        done = len(vectors)
        progress(PAGES_SHARE + (1 - PAGES_SHARE) * done / len(texts), f"embedding {done}/{len(texts)} snippets")
    return vectors


def _npy(vectors: list[list[float]]) -> bytes:
    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, np.asarray(vectors, dtype=np.float32), allow_pickle=False)
    return buffer.getvalue()

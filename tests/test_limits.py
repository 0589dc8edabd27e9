"""Every request limit is a setting, and a request over it is refused before anything is queued:
413 for the body, 422 naming the field, the limit and the setting for everything else."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from modelq.api.openai_errors import OPENAI_PATHS
from modelq.testing import serving
from pdf_helpers import make_pdf

#: Small limits, so each case is cheap to exceed.
LIMITS = {
    "max_request_bytes": 8192,
    "embed_max_texts": 2,
    "embed_max_chars": 40,
    "rerank_max_documents": 2,
    "image_max_side": 256,
    "image_max_steps": 20,
    "image_max_count": 2,
    "image_max_prompt_chars": 64,
    "llm_max_prompts": 2,
    "max_pdf_bytes": 12_000,
    "max_pdf_pages": 2,
    "max_page_size": 50,  # the default page of GET /v1/jobs
}
LLM = {"local": {"base_url": "http://127.0.0.1:9/v1"}}


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """The API with small limits over the embedded broker; no worker: nothing over a limit is ever queued."""
    from modelq.api import create_api
    from modelq.broker import EmbeddedRedis
    from modelq.config import load_settings

    home = tmp_path_factory.mktemp("limits") / "home"
    settings = load_settings(home=home, llm_endpoints=LLM, **LIMITS)
    try:
        with serving(create_api(settings)) as url:
            with httpx.Client(base_url=url, timeout=60) as client:
                yield client
    finally:
        EmbeddedRedis(home).stop()


def _png(width: int, height: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


def _pdf(pages: int, padding: int = 0) -> bytes:
    data = make_pdf([f"page {i}" for i in range(pages)], picture=False)
    return data + b"%" + b"x" * padding + b"\n" if padding else data


CASES: list[tuple[str, str, dict[str, Any], str, int, str]] = [
    # (what, path, request, field, limit, setting)
    ("texts per call", "/v1/embeddings", {"json": {"input": ["a", "b", "c"]}}, "input", 2, "MODELQ_EMBED_MAX_TEXTS"),
    (
        "characters per text",
        "/v1/embeddings",
        {"json": {"input": ["short", "y" * 41]}},
        "input",
        40,
        "MODELQ_EMBED_MAX_CHARS",
    ),
    (
        "texts per embed job",
        "/v1/jobs",
        {"json": {"task": "embed", "input": {"input": ["a", "b", "c"]}}},
        "input",
        2,
        "MODELQ_EMBED_MAX_TEXTS",
    ),
    (
        "documents per rerank",
        "/v1/rerank",
        {"json": {"query": "q", "documents": ["a", "b", "c"]}},
        "documents",
        2,
        "MODELQ_RERANK_MAX_DOCUMENTS",
    ),
    (
        "characters per document",
        "/v1/jobs",
        {"json": {"task": "rerank", "input": {"query": "q", "documents": ["z" * 41]}}},
        "documents",
        40,
        "MODELQ_EMBED_MAX_CHARS",
    ),
    (
        "image size",
        "/v1/images/generations",
        {"json": {"prompt": "a cat", "size": "512x512"}},
        "size",
        256,
        "MODELQ_IMAGE_MAX_SIDE",
    ),
    (
        "image width",
        "/generate_async",
        {"json": {"prompt": "a cat", "width": 264}},
        "width",
        256,
        "MODELQ_IMAGE_MAX_SIDE",
    ),
    (
        "steps",
        "/generate_async",
        {"json": {"prompt": "a cat", "num_inference_steps": 21}},
        "num_inference_steps",
        20,
        "MODELQ_IMAGE_MAX_STEPS",
    ),
    (
        "images per prompt",
        "/v1/images/generations",
        {"json": {"prompt": "a cat", "n": 3}},
        "n",
        2,
        "MODELQ_IMAGE_MAX_COUNT",
    ),
    (
        "prompt characters",
        "/v1/jobs",
        {"json": {"task": "text2img", "input": {"prompt": "p" * 65}}},
        "prompt",
        64,
        "MODELQ_IMAGE_MAX_PROMPT_CHARS",
    ),
    (
        "init image size",
        "/v1/images/edits",
        {"data": {"prompt": "a cat", "model": "minilm"}, "files": {"image": ("wide.png", _png(264, 8), "image/png")}},
        "image",
        256,
        "MODELQ_IMAGE_MAX_SIDE",
    ),
    (
        "init image size in a job",
        "/v1/jobs",
        {
            "json": {
                "task": "img2img",
                "input": {"prompt": "a cat", "image_b64": base64.b64encode(_png(8, 264)).decode()},
            }
        },
        "image_b64",
        256,
        "MODELQ_IMAGE_MAX_SIDE",
    ),
    (
        "edit steps",
        "/v1/images/edits",
        {"data": {"prompt": "a cat", "steps": "21"}, "files": {"image": ("a.png", _png(32, 32), "image/png")}},
        "steps",
        20,
        "MODELQ_IMAGE_MAX_STEPS",
    ),
    (
        "prompts per LLM job",
        "/v1/jobs",
        {"json": {"task": "llm", "input": {"model": "m", "prompts": ["a", "b", "c"]}}},
        "prompts",
        2,
        "MODELQ_LLM_MAX_PROMPTS",
    ),
    (
        "PDF pages",
        "/v1/documents",
        {"files": {"file": ("three.pdf", _pdf(3), "application/pdf")}},
        "file",
        2,
        "MODELQ_MAX_PDF_PAGES",
    ),
    (
        "PDF bytes",
        "/v1/documents",
        {"files": {"file": ("big.pdf", _pdf(1, padding=13_000), "application/pdf")}},
        "file",
        12_000,
        "MODELQ_MAX_PDF_BYTES",
    ),
]


@pytest.mark.parametrize(
    ("path", "request_args", "field", "limit", "setting"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_a_request_over_a_limit_is_422_naming_the_field_and_the_limit(
    http: httpx.Client, path: str, request_args: dict, field: str, limit: int, setting: str
) -> None:
    before = http.get("/v1/jobs").json()["total"]
    response = http.post(path, **request_args)
    assert response.status_code == 422, response.text
    body = response.json()
    if path in OPENAI_PATHS:  # OpenAI's routes answer OpenAI's error shape, with modelq's fields inside
        body = {**body["error"], "field": body["error"]["param"]}
    assert body["field"] == field and body["limit"] == limit, body
    assert str(limit) in body["message"] and setting in body["message"], body["message"]
    assert http.get("/v1/jobs").json()["total"] == before  # nothing was queued


def test_the_openai_client_reads_the_limit_from_its_own_error_shape(http: httpx.Client) -> None:
    import openai

    client = openai.OpenAI(base_url=f"{str(http.base_url).rstrip('/')}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        client.embeddings.create(model="minilm", input=["a", "b", "c"])
    assert caught.value.code == "InvalidInput" and caught.value.param == "input"
    assert caught.value.body["limit"] == 2 and "MODELQ_EMBED_MAX_TEXTS" in caught.value.body["message"]
    with pytest.raises(openai.APIStatusError) as too_big:
        client.embeddings.create(model="minilm", input="x" * 9000)
    assert too_big.value.status_code == 413 and too_big.value.body["limit"] == 8192


def test_a_page_over_max_page_size_is_422_naming_the_limit(http: httpx.Client) -> None:
    response = http.get("/v1/jobs", params={"limit": 51})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["field"] == "limit" and body["limit"] == 50 and "MODELQ_MAX_PAGE_SIZE" in body["message"], body
    assert http.get("/v1/jobs", params={"limit": 50}).status_code == 200


def test_a_body_over_max_request_bytes_is_413_naming_the_limit(http: httpx.Client) -> None:
    response = http.post("/v1/jobs", json={"task": "echo", "input": {"blob": "x" * 9000}})
    assert response.status_code == 413
    body = response.json()
    assert body["limit"] == 8192 and "MODELQ_MAX_REQUEST_BYTES" in body["message"]


def test_an_edit_over_max_request_bytes_is_413_in_openai_shape(http: httpx.Client) -> None:
    response = http.post(
        "/v1/images/edits",
        data={"prompt": "a cat"},
        files={"image": ("big.png", b"\x89PNG\r\n\x1a\n" + b"x" * 9000, "image/png")},
    )
    assert response.status_code == 413
    error = response.json()["error"]
    assert (
        error["code"] == "PayloadTooLarge" and error["limit"] == 8192 and "MODELQ_MAX_REQUEST_BYTES" in error["message"]
    )


def test_within_the_limits_the_same_requests_are_accepted(http: httpx.Client) -> None:
    # the limits refuse only what is over them: these are queued (no worker runs them here)
    ok = [
        http.post("/v1/jobs", json={"task": "embed", "input": {"input": ["a", "b"]}}),
        http.post(
            "/generate_async", json={"prompt": "a cat", "width": 256, "num_inference_steps": 20, "modelid": "minilm"}
        ),
        http.post("/v1/jobs", json={"task": "llm", "input": {"model": "m", "prompts": ["a", "b"]}}),
        http.post("/v1/documents", files={"file": ("two.pdf", _pdf(2), "application/pdf")}),
        http.post(
            "/v1/jobs",
            json={
                "task": "img2img",
                "input": {"prompt": "a cat", "image_b64": base64.b64encode(_png(256, 8)).decode(), "steps": 20},
            },
        ),
    ]
    assert [r.status_code for r in ok] == [202, 200, 202, 202, 202], [r.text for r in ok]
    for response in ok:
        job_id = response.json().get("id") or response.json()["taskid"]
        http.delete(f"/v1/jobs/{job_id}")

"""enrich: PDF uploads become snippets, page images and embeddings, through the real API and a
real worker on the embedded broker; encrypted, empty and broken PDFs fail their own job only."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from conftest import child_env, start_worker, stop_process, wait_for, wait_for_worker
from modelq.errors import InvalidDocument, InvalidInput, MissingDependency
from modelq.testing import serving
from modelq.workloads.enrich import check_params, page_snippets, split_text
from modelq.workloads.enrich.pdf import check_upload, open_pdf
from pdf_helpers import BROKEN_PDF, PAGE_SIZES, PAGES, encrypted_pdf, make_pdf, zero_page_pdf

#: Caps of the API and the worker in this file (small, so the 422s are cheap to reach).
MAX_PAGES = 30
MAX_BYTES = 2_000_000
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# Snippets (pure functions) ---------------------------------------------------------------------

TEXTS = {
    "sentences": "The first sentence is short. The second one is a little longer than the first! "
    "A third follows? Yes, and a fourth closes the paragraph.\n\nA new paragraph starts here and runs on "
    "for a while, with commas, clauses and words, until it finally stops.",
    "lines": "\n  ".join(f"line {i} of a pdf page with some words on it" for i in range(40)),
    "one long word": "x" * 1000 + " tail",
    "padded": "\n\n   only a few words here   \n\n",
    "empty": "",
    "blank": " \n\t \n",
}


@pytest.mark.parametrize("name", TEXTS)
@pytest.mark.parametrize(("size", "overlap"), [(100, 0), (100, 30), (250, 100), (800, 100)])
def test_snippets_slice_the_page_text_exactly_and_cover_it(name: str, size: int, overlap: int) -> None:
    text = TEXTS[name]
    # when a page's text is split
    snippets = page_snippets(text, page=7, size=size, overlap=overlap)
    # then each snippet is the page text between its offsets, trimmed, and not longer than asked
    covered: set[int] = set()
    for snippet in snippets:
        assert snippet["page"] == 7
        assert text[snippet["start"] : snippet["end"]] == snippet["text"]
        assert snippet["text"] == snippet["text"].strip() and 0 < len(snippet["text"]) <= size
        covered.update(range(snippet["start"], snippet["end"]))
    # and together they keep every visible character, in order
    assert all(i in covered for i, char in enumerate(text) if not char.isspace())
    starts = [s["start"] for s in snippets]
    assert starts == sorted(set(starts))


def test_snippets_end_at_sentences_and_overlap_at_word_boundaries() -> None:
    text = TEXTS["sentences"]
    spans = split_text(text, size=100, overlap=30)
    assert len(spans) >= 3
    first_end = spans[0][1]
    assert text[first_end - 1] in ".!?"  # a sentence end was in reach, so the snippet ends there
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert start < end  # the next snippet repeats the end of the previous one
        assert start == 0 or text[start - 1].isspace()  # starting at a word


def test_snippet_sizes_are_checked() -> None:
    with pytest.raises(ValueError, match="overlap"):
        split_text("some text", size=100, overlap=100)
    with pytest.raises(InvalidInput, match="snippet_chars must be an integer from 100") as refused:
        check_params({"pdf": "upload-" + "a" * 64 + ".pdf", "snippet_chars": 5})
    assert refused.value.field == "snippet_chars"
    with pytest.raises(InvalidInput, match="pdf must name an uploaded file") as refused:
        check_params({"pdf": "../../etc/passwd"})
    assert refused.value.field == "pdf"


# PDF reading (PDFium, no worker) -------------------------------------------------------------


def test_the_test_pdfs_are_what_they_claim() -> None:
    import pypdfium2

    # the hand-made encrypted PDF is really encrypted: PDFium opens it with the password only
    with pytest.raises(pypdfium2.PdfiumError, match="password"):
        pypdfium2.PdfDocument(encrypted_pdf())
    assert len(pypdfium2.PdfDocument(encrypted_pdf(), password="secret")) == 1
    # and the real document has its pages, text and sizes
    document = pypdfium2.PdfDocument(make_pdf(PAGES))
    assert [document[i].get_size() for i in range(3)] == [(w * 72, h * 72) for w, h in PAGE_SIZES]
    assert "basalt" in document[1].get_textpage().get_text_range()


@pytest.mark.parametrize(
    ("data", "reason", "message"),
    [
        (
            encrypted_pdf(),
            "encrypted",
            "the PDF is encrypted (it needs a password to open); upload it without a password",
        ),
        (zero_page_pdf(), "empty", "the PDF has no pages"),
        (BROKEN_PDF, "damaged", "the PDF is damaged or not a PDF"),
    ],
)
def test_unreadable_pdfs_say_what_is_wrong(data: bytes, reason: str, message: str) -> None:
    # twice each: PDFium's last error is process-wide, and must never describe an earlier document
    for _ in range(2):
        for other in (encrypted_pdf(), BROKEN_PDF, zero_page_pdf()):
            with pytest.raises(InvalidDocument):
                open_pdf(other).__enter__()
        with pytest.raises(InvalidDocument, match=re.escape(message)) as refused:
            with open_pdf(data):
                pass
        assert refused.value.reason == reason


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "file is empty"),
        (b"hello, world", "file is not a PDF: it does not start with %PDF-"),
        (b"%PDF-1.7\n" + b"0" * 5000, "file is 5009 bytes; the limit is 4096 bytes (MODELQ_MAX_PDF_BYTES)"),
    ],
)
def test_uploads_that_are_not_pdfs_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(InvalidDocument, match=re.escape(message)) as refused:
        check_upload(data, max_bytes=4096)
    assert refused.value.field == "file"


def test_importing_modelq_does_not_import_pypdfium2() -> None:
    code = "import sys, modelq, modelq.workloads.enrich; assert 'pypdfium2' not in sys.modules, 'imported'"
    subprocess.run([sys.executable, "-c", code], check=True, env=child_env())


def test_a_missing_pypdfium2_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pypdfium2", None)
    with pytest.raises(MissingDependency, match=re.escape("pip install 'modelq[pdf]'")):
        open_pdf(make_pdf(PAGES[:1])).__enter__()


# Through the API and a worker ----------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    from modelq.api import create_api
    from modelq.broker import EmbeddedRedis
    from modelq.celery_app import create_celery_app
    from modelq.config import load_settings

    root = tmp_path_factory.mktemp("enrich")
    caps = {"max_pdf_pages": MAX_PAGES, "max_pdf_bytes": MAX_BYTES}
    env = {
        "MODELQ_HOME": str(root / "home"),
        "HF_HUB_OFFLINE": "1",
        **{f"MODELQ_{key.upper()}": str(value) for key, value in caps.items()},
    }
    settings = load_settings(home=root / "home", imports=["modelq_test_tasks"], **caps)
    app = create_celery_app(settings, start_broker=True)
    app.modelq.store  # noqa: B018 - migrate before the worker starts
    # enrich and the query's embed job both run on the gpu queue (its threads pool holds the model)
    worker = start_worker(env, "gpu", "enrich@%h", "--pool", "threads", "-c", "4")
    try:
        wait_for_worker(app, "enrich@")
        with serving(create_api(settings, celery_app=app)) as url:
            with httpx.Client(base_url=url, timeout=120) as http:
                yield {"url": url, "http": http, "app": app}
    finally:
        stop_process(worker)
        EmbeddedRedis(root / "home").stop()


def _upload(http: httpx.Client, data: bytes, name: str = "doc.pdf", **fields: object) -> httpx.Response:
    form = {key: str(value) for key, value in fields.items()}
    return http.post("/v1/documents", files={"file": (name, data, "application/pdf")}, data=form)


def _finished(http: httpx.Client, document_id: str, timeout: float = 180) -> dict:
    def done() -> dict | None:
        response = http.get(f"/v1/documents/{document_id}", params={"wait": 5})
        return response.json() if response.status_code == 200 else None

    return wait_for(done, timeout=timeout, interval=0, what=f"document {document_id} to finish")


@pytest.fixture(scope="module")
def enriched(served: dict) -> dict:
    """The three-page test document, uploaded and enriched."""
    response = _upload(served["http"], make_pdf(PAGES), "report.pdf", snippet_chars=100, overlap=20)
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["task"] == "enrich" and job["status"] in ("queued", "running")
    return _finished(served["http"], job["id"])


def _page_texts(data: bytes) -> list[str]:
    import pypdfium2

    document = pypdfium2.PdfDocument(data)
    return [document[i].get_textpage().get_text_range().replace("\r\n", "\n") for i in range(len(document))]


def test_an_uploaded_pdf_becomes_snippets_with_pages_and_ranges(enriched: dict) -> None:
    # given a three-page PDF uploaded as report.pdf
    document = enriched
    assert document["status"] == "succeeded" and document["filename"] == "report.pdf"
    assert document["pages"] == 3 and document["model"] == "minilm"
    # then every snippet is a piece of its page's text, at the offsets it gives
    texts = _page_texts(make_pdf(PAGES))
    snippets = document["snippets"]
    assert [s["index"] for s in snippets] == list(range(len(snippets)))
    for snippet in snippets:
        assert texts[snippet["page"] - 1][snippet["start"] : snippet["end"]] == snippet["text"]
        assert len(snippet["text"]) <= 100
    # and each page has snippets, in page order, with its own words
    assert [s["page"] for s in snippets] == sorted(s["page"] for s in snippets)
    by_page = {page: " ".join(s["text"] for s in snippets if s["page"] == page) for page in (1, 2, 3)}
    assert "dividend" in by_page[1] and "basalt" in by_page[2] and "pancakes" in by_page[3]
    assert all(len([s for s in snippets if s["page"] == page]) >= 2 for page in (1, 2, 3))
    # and the vectors stay out of the JSON
    assert "embedding" not in snippets[0] and document["embeddings"]["shape"] == [len(snippets), 384]
    assert document["progress"] == {"fraction": 1.0, "message": f"embedding {len(snippets)}/{len(snippets)} snippets"}


def test_page_images_are_pngs_shaped_like_their_pages(served: dict, enriched: dict) -> None:
    from PIL import Image

    http = served["http"]
    images = enriched["images"]
    assert [image["page"] for image in images] == [1, 2, 3]
    assert images[1]["url"] == f"/v1/jobs/{enriched['id']}/artifacts/page-0002.png"
    for image, (width, height) in zip(images, PAGE_SIZES, strict=True):
        response = http.get(image["url"])
        assert response.status_code == 200 and response.content[:8] == PNG_MAGIC
        with Image.open(io.BytesIO(response.content)) as png:
            assert png.size == (image["width"], image["height"])
            assert png.width / png.height == pytest.approx(width / height, abs=0.01)
            # the page's picture is on it: a coloured gradient on a white page
            colours = png.convert("RGB").getcolors(maxcolors=1 << 20)
            assert any(len({r, g, b}) > 1 for _, (r, g, b) in colours)


def test_search_finds_the_page_that_talks_about_it(served: dict, enriched: dict) -> None:
    http = served["http"]
    # when searching for what only page 2 is about
    response = http.get(f"/v1/documents/{enriched['id']}/search", params={"q": "basalt columns in Iceland", "k": 3})
    # then a snippet of page 2 comes first, with its range, and the scores go down
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["query"] == "basalt columns in Iceland" and body["model"] == "minilm"
    results = body["results"]
    assert len(results) == 3 and results[0]["page"] == 2 and "basalt" in results[0]["text"]
    assert set(results[0]) == {"index", "page", "start", "end", "text", "score"}
    assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)
    assert results[0] == {**enriched["snippets"][results[0]["index"]], "score": results[0]["score"]}
    # and another query finds another page
    pancakes = http.get(f"/v1/documents/{enriched['id']}/search", params={"q": "how to make pancakes"}).json()
    assert pancakes["results"][0]["page"] == 3 and len(pancakes["results"]) == 5


def test_progress_is_reported_per_page_while_the_document_is_enriched(served: dict) -> None:
    http = served["http"]
    pages = [
        f"Page {i + 1} of the long document. It has a sentence or two.\nAnd a second line." for i in range(MAX_PAGES)
    ]
    # given a long document, with large page images
    job = _upload(http, make_pdf(pages), "long.pdf", render_scale=2).json()
    seen: list[str] = []

    def on_a_page() -> httpx.Response | None:
        response = http.get(f"/v1/documents/{job['id']}")
        message = response.json()["progress"]["message"] or ""
        if message not in seen:
            seen.append(message)
        return response if response.status_code == 202 and message.startswith("page ") else None

    # then while it runs, GET answers 202 with the page it is at
    running = wait_for(on_a_page, timeout=120, interval=0.02, what="a 'page i/n' progress message")
    assert running.json()["status"] == "running"
    assert re.fullmatch(rf"page \d+/{MAX_PAGES}", running.json()["progress"]["message"])
    # and searching it now says it is not ready yet
    early = http.get(f"/v1/documents/{job['id']}/search", params={"q": "page"})
    assert early.status_code == 409 and "still being enriched" in early.json()["message"]
    # and its event stream goes on page by page, then through the embedding, to the end
    messages = seen + [m for m in _event_messages(http, job["id"]) if m not in seen]
    order = [_phase(m) for m in messages if _phase(m) is not None]
    assert order == sorted(order) and order[-1][0] == 1, messages
    done = _finished(http, job["id"])
    assert done["status"] == "succeeded" and done["pages"] == MAX_PAGES and len(done["images"]) == MAX_PAGES
    snippets = len(done["snippets"])
    assert done["progress"] == {"fraction": 1.0, "message": f"embedding {snippets}/{snippets} snippets"}
    assert (done["images"][0]["width"], done["images"][0]["height"]) == (864, 1152)  # 6x8 in at 2 x 72 dpi


def _event_messages(http: httpx.Client, job_id: str) -> list[str]:
    """The progress messages of a job's Server-Sent Events, until its ``end`` event."""
    import json

    messages: list[str] = []
    with http.stream("GET", f"/v1/jobs/{job_id}/events") as stream:
        for line in stream.iter_lines():
            if line.startswith("data: ") and '"progress"' in line:
                message = json.loads(line[6:])["progress"]["message"]
                if message and message not in messages:
                    messages.append(message)
    return messages


def _phase(message: str) -> tuple[int, int] | None:
    """(0, page) for "page i/n", (1, done) for "embedding i/n snippets": progress only moves forward."""
    match = re.fullmatch(r"(page|embedding) (\d+)/\d+( snippets)?", message)
    return None if match is None else (0 if match.group(1) == "page" else 1, int(match.group(2)))


def test_bad_pdfs_fail_their_own_job_and_a_good_one_beside_them_succeeds(served: dict) -> None:
    http, app = served["http"], served["app"]
    # given broken documents uploaded at the same time as a good one
    bad = {
        "encrypted": (
            encrypted_pdf(),
            "InvalidDocument: the PDF is encrypted (it needs a password to open); upload it without a password",
        ),
        "no text": (make_pdf([None, None]), "InvalidDocument: the PDF has no extractable text on any of its 2 page(s)"),
        "no pages": (zero_page_pdf(), "InvalidDocument: the PDF has no pages"),
        "broken": (BROKEN_PDF, "InvalidDocument: the PDF is damaged or not a PDF"),
    }
    jobs = {name: _upload(http, data, f"{name}.pdf").json()["id"] for name, (data, _) in bad.items()}
    good = _upload(http, make_pdf(PAGES)).json()["id"]
    # and one over the page cap, stored and submitted straight to the job API (the worker checks the cap too)
    too_long = app.modelq.artifacts.put_upload(make_pdf(["a page"] * (MAX_PAGES + 1), picture=False), ".pdf")
    jobs["too long"] = http.post("/v1/jobs", json={"task": "enrich", "input": {"pdf": too_long}}).json()["id"]
    bad["too long"] = (b"", f"InvalidDocument: the PDF has {MAX_PAGES + 1} pages; the limit is {MAX_PAGES} pages")
    # then each bad one fails, once (never retried), saying what is wrong
    for name, job_id in jobs.items():
        document = _finished(http, job_id)
        assert document["status"] == "failed", name
        assert document["error"].startswith(bad[name][1]), document["error"]
        assert http.get(f"/v1/jobs/{job_id}").json()["attempts"] == 1
        search = http.get(f"/v1/documents/{job_id}/search", params={"q": "anything"})
        assert search.status_code == 409 and "failed" in search.json()["message"]
    # and the good one is enriched as if they were not there
    document = _finished(http, good)
    assert document["status"] == "succeeded" and document["pages"] == 3 and len(document["images"]) == 3


@pytest.mark.parametrize(
    ("files", "form", "field", "message"),
    [
        (None, {}, "file", "file: Field required"),
        (b"", {}, "file", "file is empty"),
        (b"GIF89a not a pdf", {}, "file", "file is not a PDF"),
        (b"%PDF-1.4\n" + b"0" * MAX_BYTES, {}, "file", f"the limit is {MAX_BYTES} bytes (MODELQ_MAX_PDF_BYTES)"),
        ("too many pages", {}, "file", f"file has {MAX_PAGES + 1} pages; the limit is {MAX_PAGES} pages"),
        ("ok", {"snippet_chars": "5"}, "snippet_chars", "snippet_chars must be an integer from 100"),
        ("ok", {"snippet_chars": "many"}, "snippet_chars", "snippet_chars: Input should be a valid integer"),
        ("ok", {"render_scale": "9"}, "render_scale", "render_scale must be a number from 0.1 to 4.0"),
    ],
)
def test_uploads_that_cannot_be_enriched_answer_422_naming_the_field(
    served: dict, files: object, form: dict, field: str, message: str
) -> None:
    http = served["http"]
    data = {"too many pages": make_pdf(["a page"] * (MAX_PAGES + 1), picture=False), "ok": make_pdf(PAGES[:1])}.get(
        files, files
    )
    if data is None:
        response = http.post("/v1/documents", data=form, files={"other": ("x.pdf", b"%PDF-")})
    else:
        response = _upload(http, data, **form)
    assert response.status_code == 422, response.text
    body = response.json()
    assert message in body["message"] and body["field"] == field


def test_unknown_documents_and_bad_searches(served: dict, enriched: dict) -> None:
    http = served["http"]
    assert http.get("/v1/documents/no-such-document").status_code == 404
    assert http.get("/v1/documents/no-such-document/search", params={"q": "x"}).status_code == 404
    other = http.post("/v1/jobs", json={"task": "echo", "input": {}}).json()["id"]  # a job, not a document
    assert http.get(f"/v1/documents/{other}").status_code == 404
    blank = http.get(f"/v1/documents/{enriched['id']}/search", params={"q": "  "})
    assert blank.status_code == 422 and blank.json()["field"] == "q"
    assert http.get(f"/v1/documents/{enriched['id']}/search").status_code == 422  # no q at all
    refused = http.post("/v1/jobs", json={"task": "enrich", "input": {"pdf": "/etc/passwd"}})
    assert refused.status_code == 422 and refused.json()["field"] == "pdf"

"""The web UI in a real headless Chromium (Debian's, driven by Playwright), against the real API,
the embedded broker and real workers: each page submits a job and its result appears.

Each test saves a screenshot of its page to ``docs/screenshots/`` (shown in docs/ui.md).
Chromium comes from ``scripts/browser`` (``scripts/test`` runs it); these tests skip only
when it is missing and cannot be installed.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import start_worker, stop_process, wait_for_worker
from modelq.testing import serving
from text2img_helpers import TINY_CAPS, TINY_MODEL, make_tiny_sd, tiny_image_stack

REPO = Path(__file__).resolve().parent.parent
SCREENSHOTS = REPO / "docs" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
MODEL = TINY_MODEL
CAPS = TINY_CAPS
TEXTS = ["The cat sits on the mat.", "A dog plays in the park.", "Quarterly revenue grew by ten percent."]
#: Long enough for a model's first load on a busy 2-core machine.
RESULT_TIMEOUT_MS = 120_000


def _chromium() -> Path:
    if not CHROMIUM.exists():
        subprocess.run(["bash", str(REPO / "scripts" / "browser")], timeout=900, check=False)
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing and scripts/browser could not install it (needs root or sudo and apt)")
    return CHROMIUM


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """The API (in a thread) over the embedded broker, a threads worker for the gpu queue
    (images, embeddings, documents) and a prefork worker for default and cpu (timetables)."""
    from modelq.api import create_api
    from modelq.broker import EmbeddedRedis

    root = tmp_path_factory.mktemp("ui")
    _, env, settings, app = tiny_image_stack(root)
    workers = [
        start_worker(env, "gpu", "uigpu@%h", "--pool", "threads", "-c", "4"),
        start_worker(env, "default,cpu", "uicpu@%h"),
    ]
    try:
        make_tiny_sd(root / MODEL)  # while the workers start
        wait_for_worker(app, "uigpu@")
        wait_for_worker(app, "uicpu@")
        with serving(create_api(settings, celery_app=app)) as url:
            with httpx.Client(base_url=url, timeout=120) as http:
                yield {"url": url, "http": http, "root": root, "settings": settings, "app": app}
    finally:
        for worker in workers:
            stop_process(worker)
        EmbeddedRedis(root / "home").stop()


@pytest.fixture(scope="module")
def browser() -> Iterator:
    path = _chromium()
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package (dev extra) drives Chromium")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(path), args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser, served: dict) -> Iterator:  # noqa: ANN001
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=served["url"])
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


#: How long an expectation waits by default (Playwright's 5 s is short on a busy 2-core machine).
EXPECT_TIMEOUT_MS = 15_000


def expect(locator):  # noqa: ANN001, ANN201
    from playwright.sync_api import expect as playwright_expect

    playwright_expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    return playwright_expect(locator)


def screenshot(page, name: str) -> None:  # noqa: ANN001
    """Save the whole page as a 256-colour PNG (a third of the size, the same look for a UI)."""
    from PIL import Image

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.evaluate("window.scrollTo(0, 0)")
    png = page.screenshot(full_page=True)
    with Image.open(io.BytesIO(png)) as image:
        image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(
            SCREENSHOTS / f"{name}.png", optimize=True
        )


def make_pdf(pages: list[list[str]]) -> bytes:
    """A small PDF with a text layer: one list of lines per page (Helvetica, no external tools)."""
    objects = ["<< /Type /Catalog /Pages 2 0 R >>", None, "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    kids = []
    for lines in pages:
        text = " T* ".join(f"({line}) Tj" for line in lines)
        stream = f"BT /F1 14 Tf 16 TL 40 250 Td {text} ET"
        objects.append(f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream")
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 360 300] /Resources << /Font << /F1 3 0 R >> >> "
            f"/Contents {len(objects)} 0 R >>"
        )
        kids.append(f"{len(objects)} 0 R")
    objects[1] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(kids)} >>"
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{offset:010d} 00000 n \n" for offset in offsets).encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


# Pages ---------------------------------------------------------------------------------


def test_generate_image_shows_the_result_its_parameters_and_a_history_that_persists(page) -> None:  # noqa: ANN001
    # given the image page
    page.goto("/ui/#/images")
    # when a prompt is generated with a random seed
    page.fill("#prompt", "a red cat")
    page.fill("#negative", "blue dog")
    page.fill("#model", MODEL)
    page.select_option("#scheduler", "Euler a")
    page.fill("#width", "32")
    page.fill("#height", "32")
    page.fill("#steps", "3")
    page.click("#generate")
    # then the image appears with its parameters, the seed the worker chose among them
    expect(page.locator("#result-images img")).to_be_visible(timeout=RESULT_TIMEOUT_MS)
    expect(page.locator("#result-params")).to_contain_text("Euler a")
    expect(page.locator("#result-params")).to_contain_text("32 × 32")
    expect(page.locator("#result-seed")).to_have_text(re.compile(r"^\d+$"))
    # and with the random seed off, the seed typed in is the one used
    page.uncheck("#random-seed")
    page.fill("#seed", "1234")
    page.click("#generate")
    expect(page.locator("#result-seed")).to_have_text("1234", timeout=RESULT_TIMEOUT_MS)
    expect(page.locator("#gallery .thumb")).to_have_count(2)
    # and the history comes from the job store: it is still there after a reload
    page.reload()
    expect(page.locator("#gallery .thumb")).to_have_count(2)
    expect(page.locator("#gallery .thumb").first).to_contain_text("seed 1234")
    page.locator("#gallery .thumb").first.click()
    expect(page.locator("#result-seed")).to_have_text("1234")
    screenshot(page, "images")


def test_an_api_error_appears_on_the_page_as_its_message(page, served: dict) -> None:  # noqa: ANN001
    before = served["http"].get("/v1/jobs", params={"task": "text2img"}).json()["total"]
    page.goto("/ui/#/images")
    page.fill("#prompt", "a red cat")
    page.fill("#model", MODEL)
    # when the width is not a multiple of 8
    page.fill("#width", "36")
    page.click("#generate")
    # then the API's 422 message is shown, and the field it names is marked
    status = page.locator("#status")
    expect(status).to_be_visible()
    expect(status).to_have_class(re.compile(r"\berror\b"))
    expect(status).to_contain_text("422 InvalidInput: width must be a multiple of 8, got 36")
    expect(page.locator("#width")).to_have_class(re.compile(r"\binvalid\b"))
    assert served["http"].get("/v1/jobs", params={"task": "text2img"}).json()["total"] == before
    # and an unknown model is a readable 404
    page.fill("#width", "32")
    page.fill("#model", "no-such-model")
    page.click("#generate")
    expect(status).to_contain_text("404 ModelNotFound")
    expect(status).to_contain_text("no-such-model")


def test_an_init_image_makes_it_image_to_image_with_a_strength(page, served: dict) -> None:  # noqa: ANN001
    from PIL import Image

    http = served["http"]
    init = served["root"] / "init.png"
    Image.new("RGB", (40, 32), (200, 40, 40)).save(init)
    page.goto("/ui/#/images")
    expect(page.locator("#strength-row")).to_be_hidden()
    page.fill("#prompt", "a blue dog")
    page.fill("#model", MODEL)
    page.fill("#steps", "4")
    # when an init image is chosen, the strength appears; a strength out of range is the API's 422, nothing queued
    page.set_input_files("#init-image", str(init))
    expect(page.locator("#strength-row")).to_be_visible()
    expect(page.locator("#init-preview")).to_be_visible()
    page.fill("#strength", "1.5")
    page.click("#generate")
    status = page.locator("#status")
    expect(status).to_contain_text("422 InvalidInput: strength must be a number greater than 0 and at most 1, got 1.5")
    expect(page.locator("#strength")).to_have_class(re.compile(r"\binvalid\b"))
    assert http.get("/v1/jobs", params={"task": "img2img"}).json()["total"] == 0
    gallery = page.locator("#gallery .thumb")
    thumbs = gallery.count()
    # then with a good strength it is an img2img job on the same model, at the init image's size
    page.fill("#strength", "0.5")
    page.uncheck("#random-seed")
    page.fill("#seed", "77")
    page.click("#generate")
    expect(page.locator("#result-seed")).to_have_text("77", timeout=RESULT_TIMEOUT_MS)
    params = page.locator("#result-params")
    expect(params).to_contain_text("StableDiffusionImg2ImgPipeline")
    expect(params).to_contain_text("40 × 32")
    expect(params).to_contain_text("strength0.5")
    expect(gallery).to_have_count(thumbs + 1)
    (job,) = http.get("/v1/jobs", params={"task": "img2img"}).json()["jobs"]
    assert (
        job["status"] == "succeeded" and job["input"]["strength"] == 0.5 and job["input"]["image"].startswith("upload-")
    )
    screenshot(page, "images-img2img")
    # and removing the image makes the form text to image again
    page.click("#clear-init")
    expect(page.locator("#strength-row")).to_be_hidden()
    expect(page.locator("#generate")).to_have_text("Generate")


def test_embed_and_rerank_shows_similarities_and_ranked_documents(page) -> None:  # noqa: ANN001
    page.goto("/ui/#/embed")
    page.fill("#texts", "\n".join(TEXTS))
    page.fill("#query", "Where is the cat?")
    page.click("#run")
    # then the documents come back ranked for the query, the cat first (the bundled bi-encoder)
    ranked = page.locator("#ranked-list li")
    expect(ranked).to_have_count(3, timeout=RESULT_TIMEOUT_MS)
    expect(ranked.first).to_contain_text(TEXTS[0])
    # and the similarity table has the query and every text, each exactly like itself
    table = page.locator("#similarity-table")
    expect(table.locator("tbody tr")).to_have_count(4)
    expect(table.locator("tbody tr").first.locator("td").first).to_have_text("1.00")
    expect(page.locator("#embed-jobs")).to_contain_text("succeeded")
    screenshot(page, "embed")


def test_timetable_shows_epochs_then_the_best_timetable_by_curriculum_and_by_room(page) -> None:  # noqa: ANN001
    page.goto("/ui/#/timetable")
    page.select_option("#sample", "medium")
    page.select_option("#quality-mode", "fast")
    page.click("#solve")
    # then every epoch is listed, and the best timetable is drawn as a grid by curriculum
    expect(page.locator("#tt-table")).to_be_visible(timeout=RESULT_TIMEOUT_MS)
    expect(page.locator("#epoch-table tbody tr")).to_have_count(3)  # fast: 3 epochs
    expect(page.locator("#which")).to_have_value("Q00")
    expect(page.locator("#tt-table .lec").first).to_be_visible()
    # and by room
    page.click("#by-room")
    expect(page.locator("#which")).to_have_value("R00")
    expect(page.locator("#tt-table .lec").first).to_be_visible()
    page.select_option("#which", "R02")
    expect(page.locator("#tt-table")).to_contain_text("C0")
    page.click("#by-curriculum")
    screenshot(page, "timetable")


def test_documents_upload_watch_browse_and_search(page, served: dict) -> None:  # noqa: ANN001
    pdf = served["root"] / "guide.pdf"
    pdf.write_bytes(
        make_pdf(
            [
                ["Lighthouses guide ships at night.", "The lamp turns every ten seconds."],
                ["Quarterly revenue grew by ten percent.", "Costs stayed flat in the third quarter."],
            ]
        )
    )
    page.goto("/ui/#/documents")
    page.set_input_files("#pdf", str(pdf))
    page.click("#upload")
    # then its pages appear, each image next to its snippets
    expect(page.locator("#pages .doc-page")).to_have_count(2, timeout=RESULT_TIMEOUT_MS)
    expect(page.locator("#page-1 img")).to_be_visible()
    expect(page.locator("#page-1")).to_contain_text("Lighthouses guide ships at night.")
    expect(page.locator("#recent-table")).to_contain_text("guide.pdf")
    # and a search ranks the snippets
    page.fill("#q", "how did revenue change?")
    page.fill("#k", "2")
    page.click("#search")
    hits = page.locator("#hit-list li")
    expect(hits.first).to_contain_text("revenue", timeout=RESULT_TIMEOUT_MS)
    expect(hits.first).to_contain_text("page 2")
    expect(page.locator("#pages .snippet.hit").first).to_be_visible()
    screenshot(page, "documents")


def test_jobs_page_submits_follows_filters_and_cancels(page) -> None:  # noqa: ANN001
    page.goto("/ui/#/jobs")
    expect(page.locator("#submit-task option[value=sleep]")).to_be_attached()

    def submit(task: str, job_input: dict) -> str:
        page.select_option("#submit-task", task)
        page.fill("#submit-input", json.dumps(job_input))
        card = page.locator("#detail-card")
        shown_before = card.get_attribute("data-id") if card.count() else None
        page.click("#submit-job")
        expect(page.locator("#status")).to_contain_text(f"Submitted {task} job")
        expect(card).to_be_visible()
        if shown_before:  # the card still shows the job submitted before until the new one's details arrive
            expect(card).not_to_have_attribute("data-id", shown_before)
        return card.get_attribute("data-id")

    # when a short job is submitted, its row follows it to the end, and its result is shown
    done = submit("sleep", {"seconds": 1, "steps": 4})
    row = page.locator(f'#job-rows tr[data-id="{done}"]')
    expect(page.locator("#job-rows")).not_to_contain_text("No jobs match")  # the empty list's line gives way
    expect(row).to_contain_text("succeeded", timeout=60_000)
    expect(row.locator(".progress-label")).to_have_text("step 4/4")
    # a long job shows its progress while it runs, and cancel stops it
    long = submit("sleep", {"seconds": 30, "steps": 30})
    row = page.locator(f'#job-rows tr[data-id="{long}"]')
    expect(row).to_contain_text("running", timeout=60_000)
    expect(row.locator(".progress-label")).to_contain_text("/30")
    expect(page.locator("#owner-counts")).to_contain_text("1 running")  # jobs waiting and running, per owner
    screenshot(page, "jobs")
    row.get_by_role("button", name="Cancel").click()
    expect(row).to_contain_text("cancelled", timeout=30_000)
    # and the filters narrow the list
    page.select_option("#filter-status", "cancelled")
    expect(page.locator(f'#job-rows tr[data-id="{done}"]')).to_have_count(0)
    expect(page.locator(f'#job-rows tr[data-id="{long}"]')).to_be_visible()
    page.select_option("#filter-status", "")
    page.select_option("#filter-task", "sleep")
    expect(page.locator(f'#job-rows tr[data-id="{done}"]')).to_be_visible()
    expect(page.locator("#job-rows tr", has_not_text="sleep")).to_have_count(0)


def test_cluster_shows_workers_queues_and_resident_models(page, served: dict) -> None:  # noqa: ANN001
    http = served["http"]
    # given a model loaded on the gpu worker, and a job running on the other one
    assert http.post("/v1/embeddings", json={"input": ["warm up"]}).status_code == 200
    running = http.post("/v1/jobs", json={"task": "sleep", "input": {"seconds": 30, "steps": 30}}).json()["id"]
    try:
        page.goto("/ui/#/cluster")
        workers = page.locator("#workers-table")
        # then both workers are listed with their pools and queues
        expect(workers).to_contain_text("uigpu@", timeout=30_000)
        expect(workers).to_contain_text("uicpu@")
        expect(workers).to_contain_text("threads × 4")
        # with the model each holds and its memory, and the job running now
        gpu_row = workers.locator("tr", has_text="uigpu@")
        expect(gpu_row.locator(".model-row", has_text="minilm")).to_contain_text("resident", timeout=30_000)
        expect(gpu_row.locator(".model-row", has_text="minilm")).to_contain_text("MiB")
        expect(workers.locator("tr", has_text="uicpu@")).to_contain_text("sleep", timeout=30_000)
        # and the queues with their depths and consumers, and the models
        queues = page.locator("#queues-table")
        expect(queues.locator("tr", has_text="cpu").first).to_contain_text("uicpu@")
        # per-model queues too, with who reads them, and a stranded count per queue
        expect(queues.locator("tr", has_text="gpu.model.minilm")).to_contain_text("uigpu@")
        expect(queues.locator("th", has_text="stranded")).to_have_count(1)
        expect(page.locator("#models-table")).to_contain_text(MODEL)
        screenshot(page, "cluster")
    finally:
        http.delete(f"/v1/jobs/{running}")


def test_root_redirects_to_the_ui_and_the_app_needs_nothing_external(served: dict) -> None:
    http = served["http"]
    assert http.get("/").headers["location"] == "/ui/"
    index = http.get("/ui/")
    assert index.status_code == 200 and "<nav" in index.text
    static = Path(__file__).resolve().parent.parent / "src" / "modelq" / "ui" / "static"
    for path in static.rglob("*"):
        if path.suffix in (".html", ".js", ".css"):
            assert not re.search(r"https?://", path.read_text()), f"{path.name} refers to an external URL"
    assert http.get("/ui/samples/small.ctt").text.startswith("Name: small")
    assert http.get("/ui/samples/nope.ctt").status_code == 404


def test_an_api_with_keys_asks_for_one_then_shows_only_that_owners_jobs(browser, served: dict) -> None:  # noqa: ANN001
    from modelq.access import hash_key
    from modelq.api import create_api

    alice, bob = (
        "mq_ui-alice-0123456789abcdefghijklmnopqrstuvwxyz01",
        "mq_ui-bob-0123456789abcdefghijklmnopqrstuvwxyz0123",
    )
    keyed = served["settings"].model_copy(update={"api_keys": {"alice": [hash_key(alice)], "bob": [hash_key(bob)]}})
    with serving(create_api(keyed, celery_app=served["app"])) as url:
        # given a job of bob's
        bobs = httpx.post(
            f"{url}/v1/jobs",
            json={"task": "echo", "input": {"who": "bob"}},
            headers={"Authorization": f"Bearer {bob}"},
            timeout=30,
        ).json()
        context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=url)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc, errors=errors: errors.append(str(exc)))
        try:
            # when alice opens the UI, it asks for a key, and she gives hers
            page.goto("/ui/#/jobs")
            expect(page.locator("#key-dialog")).to_be_visible()
            expect(page.locator("#key-reason")).to_contain_text("needs a key")
            page.fill("#key-input", alice)
            page.click("#key-form button[type=submit]")
            # then the page works with it: a job she submits is followed live to its end
            expect(page.locator("#key-dialog")).to_be_hidden()
            expect(page.locator("#submit-task option[value=sleep]")).to_be_attached()
            page.select_option("#submit-task", "sleep")
            page.fill("#submit-input", json.dumps({"seconds": 0.5, "steps": 2}))
            page.click("#submit-job")
            mine = page.locator("#detail-card")
            expect(mine).to_be_visible()
            row = page.locator(f'#job-rows tr[data-id="{mine.get_attribute("data-id")}"]')
            expect(row).to_contain_text("succeeded", timeout=60_000)
            expect(page.locator("#live")).to_have_class(re.compile(r"\bon\b"))
            # and bob's job is not hers to see
            expect(page.locator(f'#job-rows tr[data-id="{bobs["id"]}"]')).to_have_count(0)
        finally:
            context.close()
        assert not errors, f"JavaScript errors on the page: {errors}"

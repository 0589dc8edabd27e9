"""img2img end to end: the tiny random-weight Stable Diffusion pipeline in a real threads-pool worker,
run through diffusers' ``AutoPipelineForImage2Image.from_pipe`` behind the API and the official
``openai`` client's ``images.edit``; it shares the model text2img loaded (the residency figures say so)."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator

import httpx
import pytest

from conftest import start_worker, stop_process, wait_for, wait_for_worker
from modelq.testing import serving
from text2img_helpers import TINY_MODEL, make_tiny_sd, tiny_image_stack

MODEL = TINY_MODEL
PROMPT = "a red cat"
#: The modelq extras of an edit request (the openai client sends them as form fields).
EXTRA = {"seed": 42, "steps": 4, "strength": 0.6, "scheduler": "Euler"}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    from modelq.api import create_api
    from modelq.broker import EmbeddedRedis

    root = tmp_path_factory.mktemp("img2img")
    _, env, settings, app = tiny_image_stack(root)
    worker = start_worker(env, "gpu", "i2i@%h", "--pool", "threads", "-c", "2")
    try:
        make_tiny_sd(root / MODEL)  # while the worker starts
        wait_for_worker(app, "i2i@")
        with serving(create_api(settings, celery_app=app)) as url:
            with httpx.Client(base_url=url, timeout=120) as http:
                yield {"url": url, "http": http, "app": app, "root": root, "settings": settings}
    finally:
        stop_process(worker)
        EmbeddedRedis(root / "home").stop()


def init_png(width: int = 32, height: int = 32, mode: str = "RGB") -> bytes:
    """A gradient with a square in it: an init image with something to keep."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height))
    image.putdata([(x * 255 // width, y * 255 // height, 128) for y in range(height) for x in range(width)])
    ImageDraw.Draw(image).rectangle((width // 4, height // 4, width // 2, height // 2), fill=(250, 20, 20))
    buffer = io.BytesIO()
    image.convert(mode).save(buffer, format="PNG")
    return buffer.getvalue()


def _png_size(data: bytes) -> tuple[int, int]:
    from PIL import Image

    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(data)) as image:
        return image.size


def _openai(served: dict):  # noqa: ANN202
    import openai

    return openai.OpenAI(base_url=f"{served['url']}/v1", api_key="unused")


def _done(http: httpx.Client, job_id: str) -> dict:
    done = http.get(f"/v1/jobs/{job_id}", params={"wait": 30}).json()
    assert done["status"] == "succeeded", done["error"]
    return done


def _loads(app) -> list[dict]:  # noqa: ANN001
    return [row for row in app.modelq.store.residency() if row["model"] == MODEL]


def _uploads(served: dict) -> set[str]:
    folder = served["settings"].artifacts_dir / "uploads"
    return {path.name for path in folder.iterdir()} if folder.is_dir() else set()


def test_img2img_runs_on_the_model_text2img_loaded_and_loads_nothing_more(served: dict) -> None:
    http, app = served["http"], served["app"]
    hits = sum(row["hits"] for row in _loads(app))  # none yet when this test runs first, as it does in the module
    # given a text2img job, which loads the model
    t2i = http.post(
        "/v1/jobs", json={"task": "text2img", "input": {"prompt": PROMPT, "model": MODEL, "steps": 3, "seed": 7}}
    ).json()
    first = _done(http, t2i["id"])
    # when img2img jobs follow: one from that job's artifact, one from base64 bytes, one through the edit endpoint
    from_artifact = http.post(
        "/v1/jobs",
        json={
            "task": "img2img",
            "input": {
                "prompt": "a blue dog",
                "model": MODEL,
                "image": {"job": first["id"], "artifact": "image-0.png"},
                "steps": 6,
                "strength": 0.5,
                "seed": 3,
                "n": 2,
            },
        },
    )
    assert from_artifact.status_code == 202, from_artifact.text
    assert from_artifact.json()["queue"] == f"gpu.model.{MODEL}"  # the queue of the model's holder, as text2img's
    from_bytes = http.post(
        "/v1/jobs",
        json={
            "task": "img2img",
            "input": {
                "prompt": PROMPT,
                "model": MODEL,
                "image_b64": base64.b64encode(init_png(48, 40)).decode(),
                "steps": 3,
            },
        },
    )
    assert from_bytes.status_code == 202, from_bytes.text
    # the recorded input names the upload, never its bytes
    assert "image_b64" not in from_bytes.json()["input"] and from_bytes.json()["input"]["image"].startswith("upload-")
    edited = _openai(served).images.edit(
        image=("init.png", init_png(), "image/png"),
        prompt=PROMPT,
        model=MODEL,
        response_format="b64_json",
        extra_body=EXTRA,
    )
    assert _png_size(base64.b64decode(edited.data[0].b64_json)) == (32, 32)
    # then each ran image to image, through from_pipe, with progress up to the steps that ran
    done = _done(http, from_artifact.json()["id"])
    params = done["result"]["parameters"]
    assert params["pipeline"] == "StableDiffusionImg2ImgPipeline" and params["strength"] == 0.5
    assert params["image"] == {"job": first["id"], "artifact": "image-0.png"}
    assert (params["steps"], params["denoising_steps"], params["seed"]) == (6, 3, 3)
    assert done["progress"] == {"fraction": 1.0, "message": "step 3/3"}
    assert [image["seed"] for image in done["result"]["images"]] == [3, 4]
    sized = _done(http, from_bytes.json()["id"])["result"]["parameters"]
    assert (sized["width"], sized["height"], sized["strength"]) == (48, 40, 0.8)  # the init image's size; the default
    # and the worker loaded the model once: text2img's load serves every img2img job (four jobs: one load, three hits)
    rows = wait_for(
        lambda: (r := _loads(app)) and sum(row["hits"] for row in r) >= hits + 3 and r,
        timeout=30,
        what="the residency figures to count the img2img jobs",
    )
    assert sum(row["loads"] for row in rows) == 1 and [row["resident"] for row in rows] == [True]
    listed = {m["id"]: m for m in http.get("/v1/models").json()["data"]}[MODEL]
    assert [w["loads"] for w in listed["workers"]] == [1]


def test_openai_client_images_edit_same_seed_same_png_as_the_in_process_pipeline(served: dict) -> None:
    client = _openai(served)
    init = init_png()
    # given the same init image, seed and parameters twice
    first = client.images.edit(
        image=("init.png", init, "image/png"),
        prompt=PROMPT,
        model=MODEL,
        n=1,
        size="32x32",
        response_format="b64_json",
        extra_body=EXTRA,
    )
    second = client.images.edit(
        image=("init.png", init, "image/png"),
        prompt=PROMPT,
        model=MODEL,
        n=1,
        size="32x32",
        response_format="b64_json",
        extra_body=EXTRA,
    )
    pngs = [base64.b64decode(answer.data[0].b64_json) for answer in (first, second)]
    # then both are the same PNG, byte for byte
    assert pngs[0] == pngs[1] and _png_size(pngs[0]) == (32, 32) and first.created > 0
    # and it is the PNG the same from_pipe img2img pipeline gives in this process, with the same seed
    assert pngs[0] == _reference(served, init, **EXTRA)
    # and another seed gives another image
    other = client.images.edit(
        image=("init.png", init, "image/png"),
        prompt=PROMPT,
        model=MODEL,
        response_format="b64_json",
        extra_body={**EXTRA, "seed": 43},
    )
    assert base64.b64decode(other.data[0].b64_json) != pngs[0]
    # and as urls: the job's artifacts on this API, the same bytes
    as_url = client.images.edit(
        image=("init.png", init, "image/png"),
        prompt=PROMPT,
        model=MODEL,
        size="32x32",
        response_format="url",
        extra_body=EXTRA,
    )
    assert "/artifacts/image-0.png" in as_url.data[0].url and httpx.get(as_url.data[0].url).content == pngs[0]


def _reference(served: dict, init: bytes, *, seed: int, steps: int, strength: float, scheduler: str) -> bytes:
    """What diffusers itself makes of it in this process: the model as the loader loads it, run as img2img."""
    import torch
    from diffusers import AutoPipelineForImage2Image, EulerDiscreteScheduler, StableDiffusionPipeline
    from PIL import Image

    assert scheduler == "Euler"
    pipe = StableDiffusionPipeline.from_pretrained(str(served["root"] / MODEL)).to("cpu")
    img2img = AutoPipelineForImage2Image.from_pipe(pipe)
    img2img.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    img2img.set_progress_bar_config(disable=True)
    with Image.open(io.BytesIO(init)) as image:
        output = img2img(
            prompt=PROMPT,
            image=image.convert("RGB"),
            strength=strength,
            num_inference_steps=steps,
            generator=[torch.Generator("cpu").manual_seed(seed)],
            output_type="pil",
        )
    buffer = io.BytesIO()
    output.images[0].save(buffer, format="PNG")
    return buffer.getvalue()


def _edit(http: httpx.Client, image: bytes, content_type: str = "image/png", **fields: object) -> httpx.Response:
    form = {"prompt": PROMPT, "model": MODEL, "steps": "3", **{key: str(value) for key, value in fields.items()}}
    return http.post("/v1/images/edits", data=form, files={"image": ("init.png", image, content_type)})


#: Init images a refused edit sends, by name (built when the test runs).
IMAGES = {
    "png": lambda: init_png(),
    "text": lambda: b"just some text, not an image",
    "truncated": lambda: init_png()[:100],
    "too big": lambda: init_png(264, 32),  # over the tests' MODELQ_IMAGE_MAX_SIDE of 256
}


@pytest.mark.parametrize(
    ("fields", "image", "field", "message"),
    [
        ({"strength": 0}, "png", "strength", "greater than 0 and at most 1"),
        ({"strength": 1.5}, "png", "strength", "greater than 0 and at most 1, got 1.5"),
        ({"strength": "strong"}, "png", "strength", "strength"),
        ({"strength": 0.2}, "png", "strength", "runs no denoising step"),
        ({}, "text", "image", "is not an image"),
        ({}, "truncated", "image", "cannot be read as an image"),
        ({}, "too big", "image", "the limit is 256 per side (MODELQ_IMAGE_MAX_SIDE)"),
        ({"size": "36x32"}, "png", "size", "multiple of 8"),
        ({"n": 9}, "png", "n", "the limit is 4"),
        ({"pipeline": "StableDiffusionPipeline"}, "png", "pipeline", "unknown image-to-image pipeline class"),
    ],
)
def test_a_bad_edit_is_a_422_naming_the_field_and_records_nothing(
    served: dict, fields: dict, image: str, field: str, message: str
) -> None:
    http = served["http"]
    before, uploads = http.get("/v1/jobs").json()["total"], _uploads(served)
    response = _edit(http, IMAGES[image](), "text/plain" if image == "text" else "image/png", **fields)
    assert response.status_code == 422, response.text
    error = response.json()["error"]  # OpenAI's shape: the client reads param and message
    assert error["param"] == field and message in error["message"], error
    # nothing was recorded, queued or stored
    assert http.get("/v1/jobs").json()["total"] == before and _uploads(served) == uploads


def test_the_openai_client_reads_a_refused_edit(served: dict) -> None:
    import openai

    client = _openai(served)
    with pytest.raises(openai.UnprocessableEntityError) as refused:
        client.images.edit(
            image=("init.png", init_png(), "image/png"),
            prompt=PROMPT,
            model=MODEL,
            extra_body={**EXTRA, "strength": 1.5},
        )
    assert refused.value.param == "strength"
    with pytest.raises(openai.UnprocessableEntityError) as not_an_image:
        client.images.edit(image=("notes.txt", b"hello", "text/plain"), prompt=PROMPT, model=MODEL)
    assert not_an_image.value.param == "image" and "is not an image" in not_an_image.value.body["message"]
    with pytest.raises(openai.NotFoundError) as unknown:
        client.images.edit(image=("init.png", init_png(), "image/png"), prompt=PROMPT, model="dall-e-2")
    assert unknown.value.code == "ModelNotFound"


def test_an_edit_takes_one_image_and_no_mask(served: dict) -> None:
    http = served["http"]
    before = http.get("/v1/jobs").json()["total"]
    form = {"prompt": PROMPT, "model": MODEL, "steps": "2"}
    two = http.post(
        "/v1/images/edits",
        data=form,
        files=[("image", ("a.png", init_png(), "image/png")), ("image", ("b.png", init_png(), "image/png"))],
    )
    assert two.status_code == 422 and two.json()["error"]["param"] == "image"
    masked = http.post(
        "/v1/images/edits",
        data=form,
        files={"image": ("a.png", init_png(), "image/png"), "mask": ("m.png", init_png(), "image/png")},
    )
    assert masked.status_code == 422 and masked.json()["error"]["param"] == "mask"
    assert http.get("/v1/jobs").json()["total"] == before
    # a client that sends its images as a list names the field image[]
    listed = http.post(
        "/v1/images/edits",
        data={**form, "response_format": "b64_json"},
        files={"image[]": ("a.png", init_png(), "image/png")},
    )
    assert listed.status_code == 200 and _png_size(base64.b64decode(listed.json()["data"][0]["b64_json"])) == (32, 32)


@pytest.mark.parametrize(
    ("input", "field"),
    [
        ({"strength": 2}, "strength"),
        ({"strength": True}, "strength"),
        ({"image_b64": "not base64 !"}, "image_b64"),
        ({"image_b64": base64.b64encode(b"GIF89a but not really").decode()}, "image_b64"),
        ({"image": {"job": "no-such-job", "artifact": "image-0.png"}}, "image"),
        ({"image": {"job": "x", "artifact": "../secrets"}}, "image"),
        ({"image": "upload-" + "0" * 64 + ".png"}, "image"),
        ({"image": None}, "image"),
        ({"pipeline": "FluxPipeline"}, "pipeline"),
    ],
)
def test_the_generic_job_endpoint_checks_img2img_input_at_submit_time(served: dict, input: dict, field: str) -> None:
    http = served["http"]
    before, uploads = http.get("/v1/jobs").json()["total"], _uploads(served)
    body = {"prompt": PROMPT, "model": MODEL, "image_b64": base64.b64encode(init_png()).decode(), **input}
    if "image" in input:
        body.pop("image_b64")
    response = http.post("/v1/jobs", json={"task": "img2img", "input": body})
    assert response.status_code == 422 and response.json()["field"] == field, response.text
    assert http.get("/v1/jobs").json()["total"] == before and _uploads(served) == uploads


def test_an_owner_cannot_start_from_another_owners_image(served: dict) -> None:
    from modelq.jobs.service import JobService

    service = JobService(served["app"])
    http = served["http"]
    bob = service.submit("text2img", {"prompt": PROMPT, "model": MODEL, "steps": 2, "seed": 1}, owner="bob")
    _done(http, bob["id"])
    ref = {"job": bob["id"], "artifact": "image-0.png"}
    # when alice names bob's image, her job fails as if it did not exist; bob's own job runs
    alice = service.submit("img2img", {"prompt": PROMPT, "model": MODEL, "image": ref, "steps": 2}, owner="alice")
    again = service.submit("img2img", {"prompt": PROMPT, "model": MODEL, "image": ref, "steps": 2}, owner="bob")
    refused = http.get(f"/v1/jobs/{alice['id']}", params={"wait": 30}).json()
    assert refused["status"] == "failed" and refused["error"] == (
        f"InvalidInput: image: job {bob['id']!r} has no artifact 'image-0.png'"
    )
    assert _done(http, again["id"])["result"]["parameters"]["image"] == ref

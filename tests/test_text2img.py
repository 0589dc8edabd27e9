"""text2img end to end: a tiny random-weight Stable Diffusion pipeline, loaded by the real
``diffusers`` loader in a real threads-pool worker, behind the API and the official ``openai`` client."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator

import httpx
import pytest

from conftest import start_worker, stop_process, wait_for, wait_for_worker
from modelq.testing import serving
from text2img_helpers import TINY_CAPS, TINY_MODEL, make_tiny_sd, tiny_image_stack

MODEL = TINY_MODEL
PROMPT = "a red cat"
CAPS = TINY_CAPS
#: The usual sampler names every deployment of deployment 5's client offers.
SCHEDULER_NAMES = [
    "Euler",
    "Euler a",
    "DPM++ 2M",
    "DPM2",
    "DPM2 a",
    "LMS",
    "Heun",
    "DDPM",
    "DDIM",
    "DPM",
    "DEIS",
    "UniPC",
    "PNDM",
]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    from modelq.api import create_api
    from modelq.broker import EmbeddedRedis

    root = tmp_path_factory.mktemp("text2img")
    _, env, settings, app = tiny_image_stack(root)
    # the gpu queue's pool: threads in one process sharing one copy of the pipeline
    worker = start_worker(env, "gpu", "t2i@%h", "--pool", "threads", "-c", "2")
    try:
        make_tiny_sd(root / MODEL)  # while the worker starts
        wait_for_worker(app, "t2i@")
        with serving(create_api(settings, celery_app=app)) as url:
            with httpx.Client(base_url=url, timeout=120) as http:
                yield {"url": url, "http": http, "app": app, "root": root}
    finally:
        stop_process(worker)
        EmbeddedRedis(root / "home").stop()


def _png_size(data: bytes) -> tuple[int, int]:
    from PIL import Image

    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(data)) as image:
        return image.size


def _generate(http: httpx.Client, **fields: object) -> httpx.Response:
    body = {"prompt": PROMPT, "modelid": MODEL, "width": 32, "height": 32, "num_inference_steps": 3, **fields}
    return http.post("/generate", json=body)


def test_same_seed_gives_the_same_png_and_another_seed_does_not(served: dict) -> None:
    http = served["http"]
    # given the same seed and parameters twice
    first = _generate(http, generator=1234, scheduler="Euler a", negative_prompt="blue dog")
    second = _generate(http, generator=1234, scheduler="Euler a", negative_prompt="blue dog")
    # then both answers are the same PNG, byte for byte
    assert first.status_code == 200 and first.headers["content-type"] == "image/png"
    assert _png_size(first.content) == (32, 32)
    assert first.content == second.content
    assert first.headers["x-job-id"] != second.headers["x-job-id"] and first.headers["x-seed"] == "1234"
    # and another seed gives another image
    other = _generate(http, generator=1235, scheduler="Euler a", negative_prompt="blue dog")
    assert other.status_code == 200 and other.content != first.content


def test_a_job_lists_its_pngs_the_parameters_and_the_seed_it_chose(served: dict) -> None:
    http = served["http"]
    # given a job with no seed and two images per prompt
    job = http.post(
        "/v1/jobs",
        json={
            "task": "text2img",
            "input": {
                "prompt": PROMPT,
                "model": MODEL,
                "width": 48,
                "height": 32,
                "steps": 4,
                "n": 2,
                "guidance": 6.5,
                "scheduler": "dpm++ 2m",
                "pipeline": "AutoPipelineForText2Image",
            },
        },
    )
    assert job.status_code == 202 and job.json()["queue"] == f"gpu.model.{MODEL}"
    done = http.get(f"/v1/jobs/{job.json()['id']}", params={"wait": 30}).json()
    assert done["status"] == "succeeded", done["error"]
    # then the result names each PNG artifact and the parameters used, with the seed it picked
    result = done["result"]
    params = result["parameters"]
    assert isinstance(params["seed"], int)
    assert {k: params[k] for k in ("model", "width", "height", "steps", "n", "guidance", "scheduler", "pipeline")} == {
        "model": MODEL,
        "width": 48,
        "height": 32,
        "steps": 4,
        "n": 2,
        "guidance": 6.5,
        "scheduler": "DPM++ 2M",
        "pipeline": "StableDiffusionPipeline",
    }
    assert [image["name"] for image in result["images"]] == ["image-0.png", "image-1.png"]
    assert [image["seed"] for image in result["images"]] == [params["seed"], params["seed"] + 1]
    assert [a["name"] for a in done["artifacts"]] == ["image-0.png", "image-1.png"]
    pngs = [http.get(image["url"]).content for image in result["images"]]
    assert [_png_size(png) for png in pngs] == [(48, 32), (48, 32)] and pngs[0] != pngs[1]
    # and the last progress report is the last step
    assert done["progress"] == {"fraction": 1.0, "message": "step 4/4"}
    # and asking again with the seed it reported gives the same images
    again = http.post(
        "/v1/jobs",
        json={
            "task": "text2img",
            "input": {
                "prompt": PROMPT,
                "model": MODEL,
                "width": 48,
                "height": 32,
                "steps": 4,
                "n": 2,
                "guidance": 6.5,
                "scheduler": "DPM++ 2M",
                "seed": params["seed"],
            },
        },
    ).json()
    repeat = http.get(f"/v1/jobs/{again['id']}", params={"wait": 30}).json()
    assert [http.get(image["url"]).content for image in repeat["result"]["images"]] == pngs


def test_every_usual_scheduler_name_runs_to_its_last_step(served: dict) -> None:
    http = served["http"]
    jobs = {}
    for name in SCHEDULER_NAMES:
        body = {
            "task": "text2img",
            "input": {"prompt": PROMPT, "model": MODEL, "steps": 2, "seed": 7, "scheduler": name},
        }
        jobs[name] = http.post("/v1/jobs", json=body).json()["id"]
    images = {}
    for name, job_id in jobs.items():
        done = http.get(f"/v1/jobs/{job_id}", params={"wait": 30}).json()
        assert done["status"] == "succeeded", f"{name}: {done['error']}"
        assert done["result"]["parameters"]["scheduler"] == name
        # second-order samplers (Heun, DPM2) call the model about twice a step; progress still ends at "step 2/2"
        assert done["progress"] == {"fraction": 1.0, "message": "step 2/2"}, name
        images[name] = http.get(done["result"]["images"][0]["url"]).content
        assert _png_size(images[name]) == (32, 32)  # the model's own size when none is asked for
    # they are different samplers, not one under many names
    assert len(set(images.values())) >= len(SCHEDULER_NAMES) - 2


def test_async_then_results_202_while_pending_then_the_png(served: dict) -> None:
    http = served["http"]
    body = {
        "prompt": PROMPT,
        "modelid": MODEL,
        "num_inference_steps": 3,
        "generator": 99,
        "scheduler": "PNDMScheduler",
        "pipeline": "StableDiffusionPipeline",
        "guidance_scale": 5.0,
        "num_images_per_prompt": 1,
    }
    started = http.post("/generate_async", json=body)
    assert started.status_code == 200  # deployment 5's client expects 200 and a task id
    task_id = started.json()["taskid"]
    pending = http.get(f"/results/{task_id}")
    if pending.status_code == 202:
        assert pending.json()["task"] in ("PENDING", "STARTED")
    done = wait_for(
        lambda: (r := http.get(f"/results/{task_id}", params={"wait": 5})).status_code == 200 and r,
        timeout=60,
        what="the image",
    )
    assert done.headers["content-type"] == "image/png"
    assert done.content == http.post("/generate", json=body).content
    assert http.get(f"/results/{task_id}", params={"index": 1}).status_code == 404


def test_cancel_stops_the_job_between_steps(served: dict) -> None:
    http = served["http"]
    app = served["app"]
    # given a long job (300 steps, four 64x64 images) that has started stepping
    task_id = _async(http, num_inference_steps=300, width=64, height=64, num_images_per_prompt=4)
    seen: list[str] = []

    def stepping() -> bool:
        message = (http.get(f"/results/{task_id}").json().get("progress") or {}).get("message") or ""
        if message.startswith("step "):
            seen.append(message)
        return len(set(seen)) >= 2

    wait_for(stepping, timeout=60, interval=0.02, what="the job to report two steps")
    steps = [int(message.split()[1].split("/")[0]) for message in dict.fromkeys(seen)]
    assert steps == sorted(steps) and all(message.endswith("/300") for message in seen)
    # when it is cancelled
    assert http.delete(f"/v1/jobs/{task_id}").json()["status"] == "cancelled"

    # then the worker stops running it (Celery's own inspect sees it leave) ...
    def left_the_worker() -> bool:
        active = app.control.inspect(timeout=1.0).active() or {}
        return all(task["id"] != task_id for tasks in active.values() for task in tasks)

    wait_for(left_the_worker, timeout=60, interval=0.2, what="the cancelled job to stop")
    # ... before its last step: it never saved an image, and its progress stopped short
    job = http.get(f"/v1/jobs/{task_id}").json()
    assert job["status"] == "cancelled" and job["artifacts"] == [] and job["progress"]["fraction"] < 1.0
    gone = http.get(f"/results/{task_id}")
    assert gone.status_code == 409 and gone.json()["error"] == "JobCancelled"
    # and the pipeline is free for the next job
    assert _generate(http, generator=5).status_code == 200


def _async(http: httpx.Client, **fields: object) -> str:
    response = http.post("/generate_async", json={"prompt": PROMPT, "modelid": MODEL, **fields})
    assert response.status_code == 200, response.text
    return response.json()["taskid"]


def test_openai_client_images_generate(served: dict) -> None:
    import openai

    client = openai.OpenAI(base_url=f"{served['url']}/v1", api_key="unused")
    extra = {"seed": 42, "steps": 2, "scheduler": "Euler"}
    as_b64 = client.images.generate(
        model=MODEL, prompt=PROMPT, n=2, size="32x32", response_format="b64_json", extra_body=extra
    )
    pngs = [base64.b64decode(image.b64_json) for image in as_b64.data]
    assert len(pngs) == 2 and all(_png_size(png) == (32, 32) for png in pngs) and pngs[0] != pngs[1]
    assert as_b64.created > 0
    as_url = client.images.generate(
        model=MODEL, prompt=PROMPT, n=2, size="32x32", response_format="url", extra_body=extra
    )
    urls = [image.url for image in as_url.data]
    assert all(url.startswith(f"{served['url']}/v1/jobs/") and "/artifacts/image-" in url for url in urls)
    assert [httpx.get(url).content for url in urls] == pngs  # same seed, same images
    with pytest.raises(openai.NotFoundError) as missing:
        client.images.generate(model="dall-e-3", prompt=PROMPT)
    # errors come in OpenAI's shape, which the client reads: its message, param and code
    assert "unknown model 'dall-e-3'" in missing.value.body["message"] and missing.value.code == "ModelNotFound"
    with pytest.raises(openai.UnprocessableEntityError) as too_big:
        client.images.generate(model=MODEL, prompt=PROMPT, size="1000x1000")
    assert too_big.value.param == "size" and too_big.value.body["limit"] == TINY_CAPS["image_max_side"]


@pytest.mark.parametrize(
    ("path", "body", "field", "message"),
    [
        ("/generate", {"width": 36}, "width", "multiple of 8"),
        ("/generate", {"height": 512}, "height", "MODELQ_IMAGE_MAX_SIDE"),
        ("/generate", {"num_inference_steps": 301}, "num_inference_steps", "the limit is 300"),
        ("/generate", {"num_images_per_prompt": 5}, "num_images_per_prompt", "MODELQ_IMAGE_MAX_COUNT"),
        ("/generate", {"scheduler": "Euler b"}, "scheduler", "unknown scheduler 'Euler b'"),
        ("/generate_async", {"pipeline": "StableDiffusionUpscalePipeline"}, "pipeline", "unknown pipeline class"),
        ("/generate_async", {"generator": -1}, "generator", "at least 0"),
        ("/generate_async", {"colour": "red"}, "colour", "Extra inputs are not permitted"),
        ("/v1/images/generations", {"size": "33x32"}, "size", "multiple of 8"),
        ("/v1/images/generations", {"size": "big"}, "size", "WIDTHxHEIGHT"),
        ("/v1/images/generations", {"n": 9}, "n", "the limit is 4"),
        ("/v1/images/generations", {"guidance": 80}, "guidance", "from 0 to 50"),
    ],
)
def test_bad_input_is_a_422_naming_the_field_and_queues_nothing(
    served: dict, path: str, body: dict, field: str, message: str
) -> None:
    http = served["http"]
    before = http.get("/v1/jobs", params={"task": "text2img"}).json()["total"]
    base = {"prompt": PROMPT, "model": MODEL} if path.startswith("/v1/") else {"prompt": PROMPT, "modelid": MODEL}
    response = http.post(path, json={**base, **body})
    assert response.status_code == 422, response.text
    error = response.json()
    if path == "/v1/images/generations":  # OpenAI's route answers OpenAI's error shape
        error = {"field": error["error"]["param"], "message": error["error"]["message"]}
    assert error["field"] == field and message in error["message"]
    assert http.get("/v1/jobs", params={"task": "text2img"}).json()["total"] == before


@pytest.mark.parametrize(
    ("input", "field"),
    [
        ({"width": 30}, "width"),
        ({"steps": 0}, "steps"),
        ({"scheduler": "Karras"}, "scheduler"),
        ({"pipeline": "FluxPipeline"}, "pipeline"),
        ({"seed": "lucky"}, "seed"),
    ],
)
def test_the_generic_job_endpoint_checks_text2img_input_at_submit_time(served: dict, input: dict, field: str) -> None:
    response = served["http"].post(
        "/v1/jobs", json={"task": "text2img", "input": {"prompt": PROMPT, "model": MODEL, **input}}
    )
    assert response.status_code == 422 and response.json()["field"] == field


def test_unknown_models_answer_404_and_a_failed_load_fails_only_its_job(served: dict) -> None:
    http = served["http"]
    unknown = _generate(http, modelid="no-such-model")
    assert unknown.status_code == 404 and "no-such-model" in unknown.json()["message"]
    # an SD 1.x checkpoint cannot run as SDXL: the worker finds out, the answer says so
    wrong_class = _generate(http, pipeline="StableDiffusionXLPipeline")
    assert wrong_class.status_code == 422
    assert "pipeline 'StableDiffusionXLPipeline' cannot run model 'tiny-sd'" in wrong_class.json()["message"]
    # a path outside the model roots (or missing) is an unknown model, refused before a job exists
    missing = _generate(http, modelid=str(served["root"] / "missing-model"))
    assert missing.status_code == 404 and "MODELQ_MODEL_ROOTS" in missing.json()["message"]
    assert _generate(http, generator=3).status_code == 200

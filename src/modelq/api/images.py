"""Text-to-image endpoints: OpenAI-compatible ``POST /v1/images/generations`` and the seed-style trio.

* ``POST /v1/images/generations`` — the OpenAI shape (``prompt``, ``model``, ``n``, ``size``
  ``"WxH"``, ``response_format`` ``url`` or ``b64_json``), plus modelq's own fields
  (``negative_prompt``, ``steps``, ``guidance``, ``seed``, ``scheduler``, ``pipeline``);
  works with the official ``openai`` client's ``images.generate``.
* ``POST /generate`` (waits, answers ``image/png``), ``POST /generate_async``
  (``{"taskid": ...}``) and ``GET /results/{task_id}`` (202 with the status while pending, 200
  with the PNG when done): the request shape of deployment 5's FastAPI server
  (``num_inference_steps``, ``guidance_scale``, ``num_images_per_prompt``, ``generator`` as
  the seed, ``pipeline``, ``scheduler``, ``modelid``).

Every request is a ``text2img`` job like any other, checked before it is queued (a 422 that
names the request's own field); its images are the job's artifacts. Image to image
(``POST /v1/images/edits``) is in :mod:`modelq.api.image_edits` and shares the helpers here.
"""

from __future__ import annotations

import base64
import re
import time
from functools import partial
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from modelq.api.auth import owner_of
from modelq.api.errors import responses as error_responses
from modelq.api.schemas import Progress
from modelq.errors import (
    ArtifactNotFound,
    InvalidInput,
    JobCancelled,
    JobFailed,
    JobTimeout,
    NameNotFound,
    failure_of_record,
)
from modelq.jobs.dispatch import INTERACTIVE
from modelq.jobs.status import JobStatus
from modelq.models import sources
from modelq.models.registry import ModelRegistry
from modelq.workloads.text2img.params import check_params

router = APIRouter(tags=["images"])

TASK = "text2img"
#: The longest ``GET /results/{id}?wait=`` holds the connection.
MAX_WAIT_SECONDS = 30.0
#: Celery's names for a job's state, which seed-style clients print while they poll.
CELERY_STATES = {
    "queued": "PENDING",
    "running": "STARTED",
    "succeeded": "SUCCESS",
    "failed": "FAILURE",
    "cancelled": "REVOKED",
}
_SIZE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")
#: OpenAI's requests give width and height as one ``size``: errors about either name it.
SIZE_FIELDS = {"width": "size", "height": "size"}
#: The image itself, for the routes that answer a PNG.
PNG = {
    "description": "the image (its job's id in `X-Job-Id`, its seed in `X-Seed`)",
    "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
}
#: What a request that waits for its images can meet, besides a malformed body.
WAIT_ERRORS = error_responses(404, 409, 429, 500, 503, 504)


class ImageGenerationRequest(BaseModel):
    """OpenAI's ``images.generate`` body; fields modelq has no use for (quality, style, user) are ignored."""

    model_config = ConfigDict(extra="ignore")

    prompt: str = Field(min_length=1)
    model: str | None = Field(
        default=None, description="a declared model, a path or a hub id (default MODELQ_IMAGE_DEFAULT_MODEL)"
    )
    n: int | None = Field(default=None, description="images to generate (at most MODELQ_IMAGE_MAX_COUNT)")
    size: str | None = Field(default=None, description="'WxH' (multiples of 8), or 'auto' for the model's own size")
    response_format: Literal["url", "b64_json"] = "url"
    output_format: Literal["png"] | None = None
    # modelq's own parameters, for clients that send them (the openai client: extra_body=...).
    negative_prompt: str | None = None
    steps: int | None = None
    guidance: float | None = None
    seed: int | None = None
    scheduler: str | None = None
    pipeline: str | None = None


class GenRequest(BaseModel):
    """Deployment 5's request shape (its ``GenRequest``); ``generator`` is the seed."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    prompt: str = Field(min_length=1)
    negative_prompt: str | None = None
    width: int | None = None
    height: int | None = None
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    num_images_per_prompt: int | None = None
    generator: int | None = Field(
        default=None, description="the seed: the same seed and parameters give the same image"
    )
    pipeline: str | None = Field(
        default=None, description="StableDiffusionPipeline, StableDiffusionXLPipeline or AutoPipelineForText2Image"
    )
    scheduler: str | None = Field(
        default=None, description="'Euler a', 'DPM++ 2M', ... or a class name such as 'PNDMScheduler'"
    )
    modelid: str | None = Field(default=None, description="a declared model, a path or a hub id")


class PendingImage(BaseModel):
    """``GET /results/{id}`` while its job is queued or running."""

    task: Literal["PENDING", "STARTED"] = Field(description="Celery's name for the state")
    status: str
    progress: Progress
    queue_position: int | None = None


#: How the seed-style request spells the task's fields (errors name the request's field).
_GEN_FIELDS = {
    "steps": "num_inference_steps",
    "guidance": "guidance_scale",
    "n": "num_images_per_prompt",
    "seed": "generator",
    "model": "modelid",
}


def _gen_input(body: GenRequest) -> dict[str, Any]:
    return {
        "prompt": body.prompt,
        "negative_prompt": body.negative_prompt,
        "width": body.width,
        "height": body.height,
        "steps": body.num_inference_steps,
        "guidance": body.guidance_scale,
        "n": body.num_images_per_prompt,
        "seed": body.generator,
        "pipeline": body.pipeline,
        "scheduler": body.scheduler,
        "model": body.modelid,
    }


def check_model(settings: Any, model: str) -> None:
    """A request's model must be declared, under a model root, or an allowed hub id (:mod:`modelq.models.sources`).

    Raises:
        ModelNotFound: none of those (a 404 listing the declared models).
    """
    sources.check(model, settings)


def parse_size(size: str | None) -> tuple[int | None, int | None]:
    """OpenAI's ``size`` (``"WxH"``, ``"auto"`` or none) as (width, height); None for the model's own.

    Raises:
        InvalidInput: any other text (field ``size``).
    """
    if size is None or size.strip().lower() == "auto":
        return None, None
    match = _SIZE.match(size)
    if match is None:
        raise InvalidInput(f"size must be 'WIDTHxHEIGHT' (e.g. '512x512') or 'auto', got {size!r}", field="size")
    return int(match.group(1)), int(match.group(2))


def submit(
    request: Request, data: dict[str, Any], names: dict[str, str] | None = None, *, interactive: bool = False
) -> dict[str, Any]:
    """Check a request against the API's settings (caps, names, the model) and queue its job
    (``interactive``: a client waits on it, so it goes ahead of batch jobs)."""
    service = request.app.state.jobs
    checked = check_params(data, service.settings, names)
    check_model(service.settings, checked["model"])
    job_input = {key: value for key, value in checked.items() if value is not None}
    return service.submit(TASK, job_input, owner=owner_of(request) or "", priority=INTERACTIVE if interactive else None)


def _raise_for(request: Request, job: dict[str, Any], model_field: str = "model") -> None:
    """A finished job that has no images becomes the matching HTTP error.

    ``model_field`` is how the request spells the model (``modelid`` in the seed-style routes).
    """
    if job["status"] == JobStatus.CANCELLED.value:
        raise JobCancelled(job["id"])
    error = job.get("error") or job["status"]
    failure = failure_of_record(job)
    kind, message = failure["type"], failure["message"]
    if kind == "InvalidInput":  # refused by the worker's own check (its caps, its pipeline's arguments)
        raise InvalidInput(message, job_id=job["id"])
    model = (job.get("input") or {}).get("model")
    if kind == "ModelNotFound":  # the worker's own check (model roots on its file system)
        raise NameNotFound(message, field=model_field, job_id=job["id"])
    if kind == "ModelLoadError" and model not in ModelRegistry(request.app.state.jobs.settings).all():
        # A path or hub id the request named that the worker cannot load is the request's fault, as an
        # unknown name is; a declared model that fails to load stays a failed job (500).
        raise InvalidInput(message, field=model_field, job_id=job["id"])
    raise JobFailed(job["id"], job["status"], error)


def _images(request: Request, job: dict[str, Any]) -> list[tuple[dict[str, Any], Any]]:
    service = request.app.state.jobs
    return [
        (image, service.artifact_path(job["id"], image["name"], owner_of(request))) for image in job["result"]["images"]
    ]


def wait_images(request: Request, job_id: str, model_field: str = "model") -> dict[str, Any]:
    """The job once it succeeded, waiting up to ``MODELQ_IMAGE_SYNC_TIMEOUT``.

    Raises:
        JobTimeout: it did not finish in time (504; it goes on).
        JobCancelled, InvalidInput, JobFailed: it finished without images (see :func:`_raise_for`).
    """
    service = request.app.state.jobs
    done = service.wait(job_id, service.settings.image.sync_timeout, owner_of(request))
    if done["status"] != JobStatus.SUCCEEDED.value:
        _raise_for(request, done, model_field)
    return done


def _png(path: Any, job: dict[str, Any], image: dict[str, Any]) -> FileResponse:
    return FileResponse(path, media_type="image/png", headers={"X-Job-Id": job["id"], "X-Seed": str(image["seed"])})


@router.post("/v1/images/generations", responses=WAIT_ERRORS)
async def create_images(body: ImageGenerationRequest, request: Request) -> dict[str, Any]:
    """OpenAI-compatible image generation: waits for the job; `url`s point at its artifacts on this API."""
    width, height = parse_size(body.size)
    data = {**body.model_dump(exclude={"size", "response_format", "output_format"}), "width": width, "height": height}
    job = await run_in_threadpool(partial(submit, interactive=True), request, data, SIZE_FIELDS)
    done = await run_in_threadpool(wait_images, request, job["id"])
    return await openai_images(request, done, body.response_format)


async def openai_images(request: Request, done: dict[str, Any], response_format: str) -> dict[str, Any]:
    """OpenAI's images answer for a finished job: ``data`` (a ``url`` or ``b64_json`` per image), plus the job."""
    images = await run_in_threadpool(_images, request, done)
    items = []
    for image, path in images:
        if response_format == "b64_json":
            items.append({"b64_json": base64.b64encode(await run_in_threadpool(path.read_bytes)).decode()})
        else:
            items.append({"url": str(request.url_for("job_artifact", job_id=done["id"], name=image["name"]))})
    parameters = done["result"]["parameters"]
    return {
        "created": int(time.time()),
        "data": items,
        "output_format": "png",
        "size": f"{parameters['width']}x{parameters['height']}",
        "job_id": done["id"],
        "parameters": parameters,
    }


@router.post("/generate", response_class=FileResponse, responses={200: PNG, **WAIT_ERRORS})
async def generate(body: GenRequest, request: Request) -> FileResponse:
    """Generate and wait: answers the first image as `image/png` (the job id in `X-Job-Id`)."""
    job = await run_in_threadpool(partial(submit, interactive=True), request, _gen_input(body), _GEN_FIELDS)
    done = await run_in_threadpool(wait_images, request, job["id"], _GEN_FIELDS["model"])
    image, path = (await run_in_threadpool(_images, request, done))[0]
    return _png(path, done, image)


@router.post("/generate_async", responses=error_responses(404, 429, 503))
async def generate_async(body: GenRequest, request: Request) -> dict[str, str]:
    """Queue a generation: `{"taskid": ...}`; poll `GET /results/{taskid}`."""
    job = await run_in_threadpool(submit, request, _gen_input(body), _GEN_FIELDS)
    return {"taskid": job["id"]}


@router.get(
    "/results/{task_id}",
    response_class=FileResponse,
    responses={
        200: PNG,
        202: {"model": PendingImage, "description": "still queued or running"},
        **error_responses(404, 409, 500),
    },
)
async def results(
    task_id: str,
    request: Request,
    wait: float = Query(
        0, ge=0, le=MAX_WAIT_SECONDS, allow_inf_nan=False, description="long-poll: wait up to this many seconds"
    ),
    index: int = Query(0, ge=0, description="which image of the job (0 = the first)"),
) -> Any:
    """202 with `{"task": "PENDING"|"STARTED", ...}` while pending; 200 with the PNG when done; a JSON error if it failed."""
    service = request.app.state.jobs
    owner = owner_of(request)
    job = await run_in_threadpool(service.get, task_id, owner)
    if job["task"] != TASK:
        raise InvalidInput(f"job {task_id!r} is a {job['task']!r} job, not {TASK}", field="task_id")
    if wait > 0 and not JobStatus(job["status"]).finished:
        try:
            job = await run_in_threadpool(service.wait, task_id, wait, owner)
        except JobTimeout:
            job = await run_in_threadpool(service.get, task_id, owner)
    if not JobStatus(job["status"]).finished:
        pending = {
            "task": CELERY_STATES[job["status"]],
            "status": job["status"],
            "progress": job["progress"],
            "queue_position": job.get("queue_position"),
        }
        return JSONResponse(pending, status_code=202)
    if job["status"] != JobStatus.SUCCEEDED.value:
        _raise_for(request, job, _GEN_FIELDS["model"])
    images = job["result"]["images"]
    if index >= len(images):
        raise ArtifactNotFound(task_id, f"image-{index}.png")
    path = await run_in_threadpool(service.artifact_path, task_id, images[index]["name"], owner)
    return _png(path, job, images[index])

"""Image to image: OpenAI-compatible ``POST /v1/images/edits``.

A multipart request, as the official ``openai`` client's ``images.edit`` sends it: an ``image``
file (PNG, JPEG, WebP, GIF or BMP; one), a ``prompt``, and optionally ``model``, ``n``, ``size``
(``"WxH"`` resizes the init image to that size; none or ``"auto"`` keeps its own, rounded down
to multiples of 8) and ``response_format`` (``url`` or ``b64_json``). modelq's own fields come as
more form fields (the client's ``extra_body``): ``strength`` (0 < strength <= 1, default 0.8),
``negative_prompt``, ``steps``, ``guidance``, ``seed``, ``scheduler`` and ``pipeline`` (an
image-to-image class). Fields OpenAI's models use and modelq has no use for (``quality``,
``background``, ``user`` ...) are ignored; a ``mask`` (inpainting) is refused.

Every request is an ``img2img`` job like any other: the parameters, the image and the model are
checked before anything is stored or queued (a 422 naming the field, in OpenAI's error shape),
then the image is kept with the uploads of the artifact store and the job names it. The answer
waits for the job, as ``POST /v1/images/generations`` does. The whole body is bound by
``MODELQ_MAX_REQUEST_BYTES`` (413 before it is read).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.concurrency import run_in_threadpool

from modelq.api.auth import owner_of
from modelq.api.images import SIZE_FIELDS, WAIT_ERRORS, check_model, openai_images, parse_size, wait_images
from modelq.errors import InvalidInput
from modelq.workloads.text2img import init_image
from modelq.workloads.text2img.params import check_img2img_params

router = APIRouter(tags=["images"])

TASK = "img2img"


def submit_edit(request: Request, data: dict[str, Any], image: bytes) -> dict[str, Any]:
    """Check an edit request (parameters, model, image), keep its image with the uploads and queue its job.

    Args:
        request: the request (its app's job service, its owner).
        data: the ``img2img`` parameters, as the task names them.
        image: the uploaded init image's bytes.

    Returns:
        The job's record.

    Raises:
        InvalidInput: a parameter or the image is out of bounds (``field`` names the request's field).
        ModelNotFound: an unknown model name.
    """
    service = request.app.state.jobs
    checked = check_img2img_params(data, service.settings, SIZE_FIELDS)
    check_model(service.settings, checked["model"])
    name = init_image.store_upload(image, service.settings, service.app.modelq.artifacts, "image")
    job_input = {key: value for key, value in checked.items() if value is not None}
    return service.submit(TASK, {**job_input, "image": name}, owner=owner_of(request) or "")


@router.post("/v1/images/edits", responses=WAIT_ERRORS)
async def edit_images(
    request: Request,
    prompt: str = Form(..., min_length=1, description="what the image should become"),
    image: list[UploadFile] | None = File(None, description="the init image (PNG, JPEG, WebP, GIF or BMP): one"),
    images: list[UploadFile] | None = File(
        None, alias="image[]", description="the same, from a client that sends a list"
    ),
    mask: UploadFile | None = File(None, description="not supported (inpainting): refused"),
    model: str | None = Form(
        None, description="a declared model, a path or a hub id (default MODELQ_IMAGE_DEFAULT_MODEL)"
    ),
    n: int | None = Form(None, description="images to generate (at most MODELQ_IMAGE_MAX_COUNT)"),
    size: str | None = Form(
        None, description="'WxH' (multiples of 8) to resize the init image to, or 'auto' for its own size"
    ),
    response_format: Literal["url", "b64_json"] = Form("url"),
    output_format: Literal["png"] | None = Form(None),
    strength: float | None = Form(
        None, description="0 < strength <= 1: how far to move away from the init image (default 0.8)"
    ),
    negative_prompt: str | None = Form(None),
    steps: int | None = Form(None),
    guidance: float | None = Form(None),
    seed: int | None = Form(None, description="the same seed and parameters give the same images"),
    scheduler: str | None = Form(None, description="'Euler a', 'DPM++ 2M', ... or a class name"),
    pipeline: str | None = Form(
        None,
        description="an image-to-image class: AutoPipelineForImage2Image (the "
        "default), StableDiffusionImg2ImgPipeline or StableDiffusionXLImg2ImgPipeline",
    ),
) -> dict[str, Any]:
    """OpenAI-compatible image edit (image to image): waits for the job; `url`s point at its artifacts on this API."""
    files = [*(image or []), *(images or [])]
    if len(files) != 1:
        raise InvalidInput(f"image: send exactly one init image file, not {len(files)}", field="image")
    if mask is not None:
        raise InvalidInput("mask: inpainting masks are not supported; send the image alone", field="mask")
    width, height = parse_size(size)
    data = {
        "prompt": prompt,
        "model": model,
        "n": n,
        "width": width,
        "height": height,
        "strength": strength,
        "negative_prompt": negative_prompt,
        "steps": steps,
        "guidance": guidance,
        "seed": seed,
        "scheduler": scheduler,
        "pipeline": pipeline,
    }
    upload = await files[0].read()
    job = await run_in_threadpool(submit_edit, request, data, upload)
    done = await run_in_threadpool(wait_images, request, job["id"])
    return await openai_images(request, done, response_format)

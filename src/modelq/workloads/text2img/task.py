"""The ``text2img`` and ``img2img`` tasks: registration and the submit-time checks. Importing this
module is cheap (no torch, no diffusers); :mod:`.generate` is imported when a job runs."""

from __future__ import annotations

from typing import Any

from modelq.tasks import current_job, current_settings, task
from modelq.workloads.text2img import init_image
from modelq.workloads.text2img.params import check_img2img_params, check_params

#: The model a request that names none uses (``MODELQ_IMAGE_DEFAULT_MODEL``'s default); declare a
#: diffusers model under this name in ``models:`` to make it the default.
DEFAULT_MODEL = "stable-diffusion"


def _validate(data: dict[str, Any], settings: Any) -> dict[str, Any]:
    """Checks sizes, steps, counts, scheduler and pipeline at submit time (a 422 naming the field),
    and fills in the default model so the job is routed to the queue of the model it will use."""
    checked = check_params(data, settings or current_settings())
    return {**data, "model": checked["model"]}


@task("text2img", queue="gpu", models=[DEFAULT_MODEL], model_arg="model", validate=_validate)
def text2img(
    prompt: str,
    model: str | None = None,
    negative_prompt: str | None = None,
    width: int | None = None,
    height: int | None = None,
    steps: int | None = None,
    guidance: float | None = None,
    seed: int | None = None,
    n: int | None = None,
    scheduler: str | None = None,
    pipeline: str | None = None,
) -> dict[str, Any]:
    """Images from a text prompt with a diffusers pipeline; PNG artifacts, progress at every step."""
    data = dict(locals())
    from modelq.workloads.text2img.generate import run

    return run(data, current_job())


def _validate_img2img(data: dict[str, Any], settings: Any) -> dict[str, Any]:
    """Checks the parameters as for ``text2img``, plus ``strength`` and the init image (a 422 naming
    the field); an ``image_b64`` is stored as an upload only once everything else passed, so the
    job's input names the image and never holds its bytes."""
    settings = settings or current_settings()
    checked = check_img2img_params(data, settings)
    return {**init_image.prepare(data, settings), "model": checked["model"]}


# The same queue and model as text2img: a worker holding the model gets both kinds of job.
@task("img2img", queue="gpu", models=[DEFAULT_MODEL], model_arg="model", validate=_validate_img2img)
def img2img(
    prompt: str,
    image: str | dict[str, str] | None = None,
    image_b64: str | None = None,
    strength: float | None = None,
    model: str | None = None,
    negative_prompt: str | None = None,
    width: int | None = None,
    height: int | None = None,
    steps: int | None = None,
    guidance: float | None = None,
    seed: int | None = None,
    n: int | None = None,
    scheduler: str | None = None,
    pipeline: str | None = None,
) -> dict[str, Any]:
    """Images from an init image and a prompt, through the text2img model's weights; PNG artifacts, progress at every step."""
    data = dict(locals())
    from modelq.workloads.text2img.generate import run_img2img

    return run_img2img(data, current_job())

"""The ``text2img`` task: registration and the submit-time check. Importing this module is cheap
(no torch, no diffusers); :mod:`.generate` is imported when a job runs."""

from __future__ import annotations

from typing import Any

from modelq.tasks import current_job, current_settings, task
from modelq.workloads.text2img.params import check_params

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



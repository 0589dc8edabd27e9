"""One ``text2img`` or ``img2img`` job on a worker: the pipeline, the scheduler, the seeds, progress, the PNGs.

Imported when a job runs (it imports torch and diffusers). The loaded pipeline is shared
by every job of the worker process, one job at a time (they share its weights and its
device's memory): a job sets its own fresh scheduler for the run and puts the model's back
after, and a request for another pipeline class runs the same weights through diffusers'
``from_pipe``. Image to image is such a class (``AutoPipelineForImage2Image``): an ``img2img``
job uses the text-to-image model a ``text2img`` job loaded, and loads nothing of its own.

What threads share: the loaded pipeline (its modules, its scheduler attribute, its progress-bar
setting) is touched only inside :func:`_exclusive`; the ``from_pipe`` runner and the scheduler a
job makes are its own.
"""

from __future__ import annotations

import inspect
import io
import math
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from modelq.errors import InvalidInput
from modelq.models import get_model
from modelq.models.batching import exclusive
from modelq.models.loaders import _require
from modelq.models.registry import declare_by_source
from modelq.tasks import JobContext, progress
from modelq.workloads.text2img import init_image
from modelq.workloads.text2img.params import (
    DEFAULT_PIPELINE,
    SCHEDULERS,
    check_img2img_params,
    check_params,
    scheduler_for_class,
)

#: How often a job waiting for a busy pipeline checks whether it was cancelled.
_LOCK_POLL_SECONDS = 0.25


def run(data: dict[str, Any], job: JobContext) -> dict[str, Any]:
    """Generate the images of one ``text2img`` job, save them as PNG artifacts and return the result.

    Raises:
        InvalidInput: the input is over this worker's caps, or the pipeline does not take a parameter.
        TaskCancelled: the job was cancelled (it stops between steps).
    """
    params = check_params(data, job.settings)  # again, with this worker's caps
    progress(0.0, f"loading model {params['model']}")
    pipe = _load(params["model"], params["pipeline"], job)
    with _exclusive(pipe, job), _prepared(pipe, params) as runner:
        images, nsfw, used = _generate(runner, params)
    return _save(images, nsfw, used, params, job)


def run_img2img(data: dict[str, Any], job: JobContext) -> dict[str, Any]:
    """Run one ``img2img`` job: its init image through the loaded text-to-image model's ``from_pipe``.

    Raises:
        InvalidInput: the input is over this worker's caps, or the init image is unreadable or not this owner's.
        TaskCancelled: the job was cancelled (it stops between steps).
    """
    params = check_img2img_params(data, job.settings)  # again, with this worker's caps
    progress(0.0, "reading the init image")
    init = init_image.load(data, job, params["width"], params["height"])
    params.update(width=init.width, height=init.height, image=data.get("image"))
    progress(0.0, f"loading model {params['model']}")
    pipe = _load(params["model"], None, job)  # the model as text2img loads it: one copy for both
    with _exclusive(pipe, job), _prepared(pipe, params) as runner:
        images, nsfw, used = _generate(runner, params, init)
    return _save(images, nsfw, used, params, job)


def _save(
    images: list[Any], nsfw: list[bool] | None, used: dict[str, Any], params: dict[str, Any], job: JobContext
) -> dict[str, Any]:
    """Each image as a PNG artifact; the job's result."""
    result_images = []
    for index, image in enumerate(images):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        meta = job.save_artifact(f"image-{index}.png", buffer.getvalue(), "image/png")
        result_images.append(
            {
                "name": meta["name"],
                "url": f"/v1/jobs/{job.id}/artifacts/{meta['name']}",
                "size": meta["size"],
                "width": image.width,
                "height": image.height,
                "seed": used["seed"] + index,
                "nsfw": None if nsfw is None else bool(nsfw[index]),
            }
        )
    width, height = images[0].size if images else (params["width"], params["height"])
    parameters = {**params, **used, "width": width, "height": height}
    return {"images": result_images, "parameters": parameters}


def _load(model: str, pipeline: str | None, job: JobContext) -> Any:
    """The loaded pipeline for ``model``: a declared model, or a path / hub id declared here on first use."""
    residency = job.residency
    declared = residency.registry.all() if residency is not None else {}
    if model not in declared:
        torch = _require("torch", "image")
        declare_by_source(
            model,
            "diffusers",
            device="auto",
            dtype="float16" if torch.cuda.is_available() else None,
            options={"pipeline": pipeline or DEFAULT_PIPELINE},
        )
    pipe = get_model(model)
    if not callable(pipe) or not hasattr(pipe, "components"):
        raise InvalidInput(
            f"model {model!r} is not a diffusers pipeline (declare it with loader: diffusers)", field="model"
        )
    return pipe


@contextmanager
def _exclusive(pipe: Any, job: JobContext) -> Iterator[None]:
    """Hold the pipeline (and its device) for this job; a job waiting for it can still be cancelled."""
    told = False

    def waiting() -> None:
        nonlocal told
        if not told:
            progress(0.0, "waiting for the pipeline (another job is using it)")
            told = True
        job.check_cancelled()

    with exclusive(pipe, poll=waiting, poll_seconds=_LOCK_POLL_SECONDS):
        yield


@contextmanager
def _prepared(pipe: Any, params: dict[str, Any]) -> Iterator[Any]:
    """``pipe`` set up for one job: the requested pipeline class and a fresh scheduler (put back after).

    Callers hold the pipeline's lock, so no other job sees the swapped scheduler.
    """
    diffusers = _require("diffusers", "image")
    if params["scheduler"] is None:
        scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)  # fresh state, the model's own kind
    else:
        class_name, overrides = SCHEDULERS[params["scheduler"]]
        scheduler = getattr(diffusers, class_name).from_config(pipe.scheduler.config, **overrides)
    runner = pipe
    wanted = params["pipeline"]
    if wanted not in (None, "AutoPipelineForText2Image", type(pipe).__name__):
        try:  # the same weights under another pipeline class
            runner = getattr(diffusers, wanted).from_pipe(pipe)
        except Exception as exc:  # e.g. an SD 1.5 checkpoint asked to run as SDXL: components are missing
            raise InvalidInput(
                f"pipeline {wanted!r} cannot run model {params['model']!r} (a {type(pipe).__name__}): {exc}",
                field="pipeline",
            ) from exc
    original = runner.scheduler
    runner.set_progress_bar_config(disable=True)
    runner.scheduler = scheduler
    try:
        yield runner
    finally:
        runner.scheduler = original


def _generate(
    runner: Any, params: dict[str, Any], init: Any = None
) -> tuple[list[Any], list[bool] | None, dict[str, Any]]:
    """Run the pipeline; ``init`` (a PIL image) makes it image to image, at ``params["strength"]``."""
    torch = _require("torch", "image")
    n = params["n"]
    # Image to image runs int(steps x strength) of the steps: progress counts the ones that run.
    steps = params["steps"] if init is None else min(params["steps"], int(params["steps"] * params["strength"]))
    seed = params["seed"] if params["seed"] is not None else secrets.randbelow(2**32)
    device = runner.device
    # One generator per image: image k of a request starts from the noise of seed + k, as n=1 would.
    generators = [torch.Generator(device=device).manual_seed(seed + k) for k in range(n)]

    def on_step_end(pipe: Any, index: int, _timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        # Second-order schedulers (Heun, DPM2) run about two model calls per step: report the step
        # the user asked for, so the last call says "step N/N".
        total = max(int(getattr(pipe, "num_timesteps", 0) or steps), index + 1)
        done = min(steps, max(1, math.ceil((index + 1) * steps / total)))
        progress((index + 1) / total, f"step {done}/{steps}")  # raises TaskCancelled: stops between steps
        return tensors

    kwargs: dict[str, Any] = {
        "prompt": params["prompt"],
        "num_inference_steps": params["steps"],
        "num_images_per_prompt": n,
        "generator": generators,
        "output_type": "pil",
        "callback_on_step_end": on_step_end,
    }
    optional = {"negative_prompt": params["negative_prompt"], "guidance_scale": params["guidance"]}
    if init is None:
        optional.update(width=params["width"], height=params["height"])
    else:  # the output has the init image's size (resized to the request's before)
        kwargs.update(image=init, strength=params["strength"])
    kwargs.update({key: value for key, value in optional.items() if value is not None})
    accepted = inspect.signature(runner.__call__).parameters
    for key in kwargs:
        if key not in accepted:
            field = {"guidance_scale": "guidance", "callback_on_step_end": "pipeline"}.get(key, key)
            raise InvalidInput(f"{type(runner).__name__} does not take {key!r}", field=field)
    output = runner(**kwargs)
    used = {
        "seed": seed,
        "pipeline": type(runner).__name__,
        "scheduler": params["scheduler"] or scheduler_for_class(type(runner.scheduler).__name__),
        "guidance": getattr(runner, "guidance_scale", params["guidance"]),
    }
    if init is not None:
        used["denoising_steps"] = steps
    return list(output.images), getattr(output, "nsfw_content_detected", None), used

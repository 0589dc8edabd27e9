"""One ``text2img`` job on a worker: the pipeline, the scheduler, the seeds, progress, the PNGs.

Imported when a job runs (it imports torch and diffusers). The loaded pipeline is shared
by every job of the worker process, one job at a time (they share its weights and its
device's memory): a job sets its own fresh scheduler for the run and puts the model's back
after, and a request for another pipeline class runs the same weights through diffusers'
``from_pipe``.
"""

from __future__ import annotations

import inspect
import io
import math
import secrets
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from modelq.errors import InvalidInput
from modelq.models import get_model
from modelq.models.loaders import _require
from modelq.models.registry import declare_by_source
from modelq.tasks import JobContext, progress
from modelq.workloads.text2img.params import (
    DEFAULT_PIPELINE,
    SCHEDULERS,
    check_params,
    looks_like_source,
    scheduler_for_class,
)

_locks: weakref.WeakKeyDictionary[Any, threading.Lock] = weakref.WeakKeyDictionary()
_locks_guard = threading.Lock()
#: How often a job waiting for a busy pipeline checks whether it was cancelled.
_LOCK_POLL_SECONDS = 0.25


def run(data: dict[str, Any], job: JobContext) -> dict[str, Any]:
    """Generate the images of one job, save them as PNG artifacts and return the result."""
    params = check_params(data, job.settings)  # again, with this worker's caps
    progress(0.0, f"loading model {params['model']}")
    pipe = _load(params["model"], params["pipeline"], job)
    with _exclusive(pipe, job), _prepared(pipe, params) as runner:
        images, nsfw, used = _generate(runner, params)
    result_images = []
    for index, image in enumerate(images):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        meta = job.save_artifact(f"image-{index}.png", buffer.getvalue(), "image/png")
        result_images.append({
            "name": meta["name"], "url": f"/v1/jobs/{job.id}/artifacts/{meta['name']}", "size": meta["size"],
            "width": image.width, "height": image.height, "seed": used["seed"] + index,
            "nsfw": None if nsfw is None else bool(nsfw[index]),
        })  # fmt: skip
    width, height = images[0].size if images else (params["width"], params["height"])
    parameters = {**params, **used, "width": width, "height": height}
    return {"images": result_images, "parameters": parameters}


def _load(model: str, pipeline: str | None, job: JobContext) -> Any:
    """The loaded pipeline for ``model``: a declared model, or a path / hub id declared here on first use."""
    residency = job.residency
    declared = residency.registry.all() if residency is not None else {}
    if model not in declared and looks_like_source(model):
        torch = _require("torch", "image")
        declare_by_source(
            model, "diffusers", device="auto", dtype="float16" if torch.cuda.is_available() else None,
            options={"pipeline": pipeline or DEFAULT_PIPELINE},
        )  # fmt: skip
    pipe = get_model(model)
    if not callable(pipe) or not hasattr(pipe, "components"):
        raise InvalidInput(f"model {model!r} is not a diffusers pipeline (declare it with loader: diffusers)",
                           field="model")  # fmt: skip
    return pipe


@contextmanager
def _exclusive(pipe: Any, job: JobContext) -> Iterator[None]:
    with _locks_guard:
        lock = _locks.setdefault(pipe, threading.Lock())
    if not lock.acquire(blocking=False):
        progress(0.0, "waiting for the pipeline (another job is using it)")
        while not lock.acquire(timeout=_LOCK_POLL_SECONDS):
            job.check_cancelled()
    try:
        yield
    finally:
        lock.release()


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


def _generate(runner: Any, params: dict[str, Any]) -> tuple[list[Any], list[bool] | None, dict[str, Any]]:
    torch = _require("torch", "image")
    steps, n = params["steps"], params["n"]
    seed = params["seed"] if params["seed"] is not None else secrets.randbelow(2**32)
    device = runner.device
    # One generator per image: image k of a request starts from the noise of seed + k, as n=1 would.
    generators = [torch.Generator(device=device).manual_seed(seed + k) for k in range(n)]

    def on_step_end(pipe: Any, index: int, _timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        # Second-order schedulers (Heun, DPM2) run about two model calls per step: report the step
        # the user asked for, so the last call says "step N/N".
        total = max(int(getattr(pipe, "num_timesteps", 0) or steps), index + 1)
        done = min(steps, max(1, math.ceil((index + 1) * steps / total)))
        progress((index + 1) / total, f"step {done}/{steps}")  # raises JobCancelled: stops between steps
        return tensors

    kwargs: dict[str, Any] = {
        "prompt": params["prompt"], "num_inference_steps": steps, "num_images_per_prompt": n,
        "generator": generators, "output_type": "pil", "callback_on_step_end": on_step_end,
    }  # fmt: skip
    optional = {"negative_prompt": params["negative_prompt"], "width": params["width"], "height": params["height"],
                "guidance_scale": params["guidance"]}  # fmt: skip
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
    return list(output.images), getattr(output, "nsfw_content_detected", None), used

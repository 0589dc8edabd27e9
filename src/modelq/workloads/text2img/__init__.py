"""``text2img`` and ``img2img``: diffusers text to image and image to image (SD 1.x/2.x, SDXL, any
AutoPipelineForText2Image model).

A ``text2img`` job names a model (declared in ``models:`` with ``loader: diffusers``, or a local
path or hub id), a prompt and the usual parameters: negative prompt, size (multiples of 8,
capped), steps (capped), guidance, seed, images per prompt, a scheduler by its usual name
("Euler a", "DPM++ 2M", ...) and optionally a pipeline class. Each image is a PNG artifact;
progress is reported at every step, and a cancelled job stops between steps.

An ``img2img`` job takes the same parameters plus an init image (an upload, or an earlier job's
artifact) and a ``strength``; it runs the same loaded model through diffusers'
``AutoPipelineForImage2Image.from_pipe``, so it never loads a second copy.

Modules: :mod:`.params` (names, caps, the 422s; pure Python), :mod:`.init_image` (the init image:
references, uploads, checks), :mod:`.generate` (the run; torch and diffusers, imported when a job
runs), :mod:`.task` (the registered tasks). Importing this package registers the tasks and nothing more.
"""

from __future__ import annotations

from modelq.workloads.text2img import task as _task  # noqa: F401 - registers the task
from modelq.workloads.text2img.params import (
    IMG2IMG_PIPELINES,
    PIPELINES,
    SCHEDULERS,
    check_img2img_params,
    check_params,
)

__all__ = ["IMG2IMG_PIPELINES", "PIPELINES", "SCHEDULERS", "check_img2img_params", "check_params"]

"""``text2img``: diffusers text-to-image (SD 1.x/2.x, SDXL, any AutoPipelineForText2Image model).

A job names a model (declared in ``models:`` with ``loader: diffusers``, or a local path or hub
id), a prompt and the usual parameters: negative prompt, size (multiples of 8, capped), steps
(capped), guidance, seed, images per prompt, a scheduler by its usual name ("Euler a",
"DPM++ 2M", ...) and optionally a pipeline class. Each image is a PNG artifact; progress is
reported at every step, and a cancelled job stops between steps.

Modules: :mod:`.params` (names, caps, the 422s; pure Python), :mod:`.generate` (the run; torch
and diffusers, imported when a job runs), :mod:`.task` (the registered task). Importing this
package registers the task and nothing more.
"""

from __future__ import annotations

from modelq.workloads.text2img import task as _task  # noqa: F401 - registers the task
from modelq.workloads.text2img.params import PIPELINES, SCHEDULERS, check_params

__all__ = ["PIPELINES", "SCHEDULERS", "check_params"]

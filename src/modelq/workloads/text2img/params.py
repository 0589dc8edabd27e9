"""``text2img`` and ``img2img`` job parameters: names, defaults, caps and the submit-time checks.

Pure Python on purpose: the API and the submit path check requests with it without
importing torch or diffusers (a 422 that names the field, before anything is queued).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from modelq.errors import InvalidInput

#: Pipeline classes a request may name; a model declared in config may use any class (``options.pipeline``).
PIPELINES = ("StableDiffusionPipeline", "StableDiffusionXLPipeline", "AutoPipelineForText2Image")
#: The class a model given by path or hub id is loaded with when the request names none.
DEFAULT_PIPELINE = "AutoPipelineForText2Image"
#: Image-to-image classes an ``img2img`` request may name: the loaded (text-to-image) weights run
#: through the class's ``from_pipe``, so image to image never loads a model of its own.
IMG2IMG_PIPELINES = ("AutoPipelineForImage2Image", "StableDiffusionImg2ImgPipeline", "StableDiffusionXLImg2ImgPipeline")
DEFAULT_IMG2IMG_PIPELINE = "AutoPipelineForImage2Image"
#: How far ``img2img`` moves away from the init image (0: not at all, 1: all the way): diffusers' default.
DEFAULT_STRENGTH = 0.8

#: Sampler names as the usual UIs spell them -> (diffusers scheduler class, config overrides).
SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "Euler": ("EulerDiscreteScheduler", {}),
    "Euler a": ("EulerAncestralDiscreteScheduler", {}),
    "DPM++ 2M": ("DPMSolverMultistepScheduler", {}),
    "DPM++ 2M Karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    "DPM++ 2M SDE": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
    "DPM++ 2M SDE Karras": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True},
    ),
    "DPM2": ("KDPM2DiscreteScheduler", {}),
    "DPM2 Karras": ("KDPM2DiscreteScheduler", {"use_karras_sigmas": True}),
    "DPM2 a": ("KDPM2AncestralDiscreteScheduler", {}),
    "DPM2 a Karras": ("KDPM2AncestralDiscreteScheduler", {"use_karras_sigmas": True}),
    "LMS": ("LMSDiscreteScheduler", {}),
    "LMS Karras": ("LMSDiscreteScheduler", {"use_karras_sigmas": True}),
    "Heun": ("HeunDiscreteScheduler", {}),
    "DDPM": ("DDPMScheduler", {}),
    "DDIM": ("DDIMScheduler", {}),
    "DPM": ("DPMSolverSinglestepScheduler", {}),
    "DEIS": ("DEISMultistepScheduler", {}),
    "UniPC": ("UniPCMultistepScheduler", {}),
    # Stable Diffusion's own PNDM setting; without it PNDM needs more than a handful of steps.
    "PNDM": ("PNDMScheduler", {"skip_prk_steps": True}),
}

DEFAULT_STEPS = 30
MAX_SEED = 2**63 - 1
MAX_GUIDANCE = 50.0


def _normalise(name: str) -> str:
    return re.sub(r"\s+", " ", name.strip()).lower()


# Usual names, case-insensitive; and class names (the seed client sends "PNDMScheduler"), each
# meaning the first entry of its class ("DPMSolverMultistepScheduler" is "DPM++ 2M").
_SCHEDULER_LOOKUP: dict[str, str] = {_normalise(name): name for name in SCHEDULERS}
for _name, (_cls, _overrides) in SCHEDULERS.items():
    _SCHEDULER_LOOKUP.setdefault(_normalise(_cls), _name)


def scheduler_name(value: str, field: str = "scheduler") -> str:
    """The canonical name (``"Euler a"``) for a usual name in any case, or a scheduler class name.

    Raises:
        InvalidInput: an unknown name; the message lists the known ones.
    """
    name = _SCHEDULER_LOOKUP.get(_normalise(value))
    if name is None:
        raise InvalidInput(
            f"{field}: unknown scheduler {value!r}; use one of {', '.join(SCHEDULERS)} (or a class name such as "
            "EulerDiscreteScheduler)",
            field=field,
        )
    return name


def scheduler_for_class(class_name: str) -> str:
    """The usual name of a scheduler class (``DDIMScheduler`` -> ``DDIM``), else the class name."""
    return _SCHEDULER_LOOKUP.get(_normalise(class_name), class_name)


def _int(value: Any, field: str, low: int, high: int, setting: str | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{field} must be an integer, not {value!r}", field=field)
    if value < low:
        raise InvalidInput(f"{field} must be at least {low}, got {value}", field=field)
    if value > high:
        where = f" ({setting})" if setting else ""
        raise InvalidInput(f"{field} is {value}; the limit is {high}{where}", field=field, limit=high)
    return value


def _text(value: Any, field: str, limit: int, *, required: bool) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise InvalidInput(f"{field} must be a non-empty string", field=field)
    if len(value) > limit:
        raise InvalidInput(
            f"{field} is {len(value)} characters; the limit is {limit} (MODELQ_IMAGE_MAX_PROMPT_CHARS)",
            field=field,
            limit=limit,
        )
    return value


def check_params(data: Mapping[str, Any], settings: Any, names: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Check a ``text2img`` job's input and return it normalised (canonical scheduler name, defaults).

    Args:
        data: the task's keyword arguments (``prompt``, ``model``, ``negative_prompt``, ``width``,
            ``height``, ``steps``, ``guidance``, ``seed``, ``n``, ``scheduler``, ``pipeline``).
        settings: the caps (``image_max_side``, ``image_max_steps``, ``image_max_count``) and
            ``image_default_model``.
        names: how the request spells each field, for the error (the seed-style endpoint says
            ``num_inference_steps`` where the task says ``steps``).

    Raises:
        InvalidInput: with ``field`` naming the offending request field.
    """
    names = names or {}

    def name(key: str) -> str:
        return names.get(key, key)

    chars = settings.image.max_prompt_chars
    out: dict[str, Any] = {"prompt": _text(data.get("prompt"), name("prompt"), chars, required=True)}
    model = data.get("model") or settings.image.default_model
    if not isinstance(model, str) or len(model) > 1000:
        raise InvalidInput(f"{name('model')} must be a model name, path or hub id", field=name("model"))
    out["model"] = model
    out["negative_prompt"] = _text(data.get("negative_prompt"), name("negative_prompt"), chars, required=False)
    for key in ("width", "height"):
        value = data.get(key)
        if value is not None:
            value = _int(value, name(key), 8, settings.image.max_side, "MODELQ_IMAGE_MAX_SIDE")
            if value % 8:
                raise InvalidInput(f"{name(key)} must be a multiple of 8, got {value}", field=name(key))
        out[key] = value
    steps = data.get("steps")
    out["steps"] = (
        DEFAULT_STEPS
        if steps is None
        else _int(steps, name("steps"), 1, settings.image.max_steps, "MODELQ_IMAGE_MAX_STEPS")
    )
    guidance = data.get("guidance")
    if guidance is not None:
        if isinstance(guidance, bool) or not isinstance(guidance, (int, float)) or not 0 <= guidance <= MAX_GUIDANCE:
            raise InvalidInput(
                f"{name('guidance')} must be a number from 0 to {MAX_GUIDANCE:g}, got {guidance!r}",
                field=name("guidance"),
            )
        guidance = float(guidance)
    out["guidance"] = guidance
    seed = data.get("seed")
    out["seed"] = None if seed is None else _int(seed, name("seed"), 0, MAX_SEED)
    n = data.get("n")
    out["n"] = 1 if n is None else _int(n, name("n"), 1, settings.image.max_count, "MODELQ_IMAGE_MAX_COUNT")
    scheduler = data.get("scheduler")
    if scheduler is not None and not isinstance(scheduler, str):
        raise InvalidInput(f"{name('scheduler')} must be a scheduler name", field=name("scheduler"))
    out["scheduler"] = None if scheduler is None else scheduler_name(scheduler, name("scheduler"))
    pipeline = data.get("pipeline")
    if pipeline is not None and pipeline not in PIPELINES:
        raise InvalidInput(
            f"{name('pipeline')}: unknown pipeline class {pipeline!r}; use one of {', '.join(PIPELINES)}",
            field=name("pipeline"),
        )
    out["pipeline"] = pipeline
    return out


def check_strength(value: Any, steps: int, field: str = "strength", steps_field: str = "steps") -> float:
    """``strength`` as a float in (0, 1], high enough that ``steps`` runs at least one denoising step.

    Image to image runs ``int(steps * strength)`` of the ``steps`` (the rest would only re-add the
    noise the init image skips).

    Raises:
        InvalidInput: not a number, outside (0, 1], or too small for ``steps`` (``field`` names it).
    """
    if value is None:
        value = DEFAULT_STRENGTH
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not 0 < value <= 1:  # NaN fails the comparison too
        raise InvalidInput(f"{field} must be a number greater than 0 and at most 1, got {value!r}", field=field)
    if int(steps * value) < 1:
        raise InvalidInput(
            f"{field} {value:g} with {steps} {steps_field} runs no denoising step (it runs "
            f"int({steps_field} x {field}) of them); raise {field} or {steps_field}",
            field=field,
        )
    return float(value)


def check_img2img_params(
    data: Mapping[str, Any], settings: Any, names: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Check an ``img2img`` job's parameters (all but its init image) and return them normalised.

    The same as :func:`check_params`, plus ``strength``; ``pipeline`` names an image-to-image class
    (:data:`IMG2IMG_PIPELINES`, default ``AutoPipelineForImage2Image``). ``width`` and ``height``,
    when given, are the size the init image is resized to (the output's size).

    Args:
        data: the task's keyword arguments.
        settings: the caps, as for :func:`check_params`.
        names: how the request spells each field, for the error.

    Returns:
        The parameters, with ``strength`` and ``pipeline`` filled in.

    Raises:
        InvalidInput: with ``field`` naming the offending request field.
    """
    names = names or {}
    pipeline_field = names.get("pipeline", "pipeline")
    out = check_params({**data, "pipeline": None}, settings, names)
    pipeline = data.get("pipeline")
    if pipeline is not None and pipeline not in IMG2IMG_PIPELINES:
        raise InvalidInput(
            f"{pipeline_field}: unknown image-to-image pipeline class {pipeline!r}; use one of "
            f"{', '.join(IMG2IMG_PIPELINES)}",
            field=pipeline_field,
        )
    out["pipeline"] = pipeline or DEFAULT_IMG2IMG_PIPELINE
    out["strength"] = check_strength(
        data.get("strength"), out["steps"], names.get("strength", "strength"), names.get("steps", "steps")
    )
    return out

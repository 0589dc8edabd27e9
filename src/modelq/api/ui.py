"""The web UI: the static app at ``/ui/`` (``/`` redirects there) and the few facts its forms need.

``GET /ui/options.json`` gives the choices the forms offer (schedulers, caps, quality modes,
bundled timetable samples); ``GET /ui/samples/{name}.ctt`` gives a sample's text. Everything
else the pages show comes from the public API.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from modelq.errors import NameNotFound
from modelq.ui import STATIC_DIR

router = APIRouter(include_in_schema=False)


@router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse("/ui/")


@router.get("/ui/options.json")
def options(request: Request) -> dict[str, Any]:
    """What the forms offer; defaults and caps come from the settings in force."""
    from modelq.workloads import embed
    from modelq.workloads.text2img.params import DEFAULT_STEPS, DEFAULT_STRENGTH, PIPELINES, SCHEDULERS
    from modelq.workloads.timetable.generate import SAMPLES
    from modelq.workloads.timetable.inputs import QUALITY_MODES

    settings = request.app.state.settings
    return {
        "image": {
            "default_model": settings.image.default_model,
            "schedulers": list(SCHEDULERS),
            "pipelines": list(PIPELINES),
            "default_steps": DEFAULT_STEPS,
            "max_side": settings.image.max_side,
            "max_steps": settings.image.max_steps,
            "max_count": settings.image.max_count,
            "default_strength": DEFAULT_STRENGTH,
        },
        "embed": {"default_model": embed.DEFAULT_MODEL},
        "timetable": {"samples": list(SAMPLES), "quality_modes": QUALITY_MODES, "default_quality_mode": "balanced"},
    }


@router.get("/ui/samples/{name}.ctt", response_class=PlainTextResponse)
def timetable_sample(name: str) -> str:
    """A bundled timetable instance as ITC-2007 ``.ctt`` text."""
    from modelq.workloads.timetable.generate import SAMPLES, sample

    if name not in SAMPLES:
        raise NameNotFound(f"unknown sample {name!r}; samples: {', '.join(SAMPLES)}", field="name")
    return sample(name)


# Last: everything else under /ui/ is a file of the app (``/ui`` redirects to ``/ui/``).
router.mount("/ui", StaticFiles(directory=STATIC_DIR, html=True), name="ui")

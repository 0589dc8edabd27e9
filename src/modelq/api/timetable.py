"""``POST /api/generate_variants``: the timetable generator's own endpoint (deployment 2's request shape).

The body carries who asks (``organization_id``, ``semester``, ``academic_year``), the
``quality_mode`` and the problem as ITC-2007 ``.ctt`` text (``ctt``) or its JSON form
(``instance``). It answers 202 with a ``timetable`` job (the same record as ``POST /v1/jobs``);
``GET /v1/jobs/{id}`` shows the progress per epoch and, once finished, the variants.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from modelq.api.auth import owner_of
from modelq.api.errors import responses as error_responses
from modelq.api.schemas import JobOut, JsonObject
from modelq.workloads.timetable.inputs import LIMITS, check_input

router = APIRouter(tags=["timetable"])


class GenerateVariantsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    organization_id: str = Field(min_length=1, max_length=200)
    semester: int | str = Field(description="e.g. 1, or 'autumn'")
    academic_year: str = Field(min_length=1, max_length=50, description="e.g. '2024-25'")
    quality_mode: Literal["fast", "balanced", "best"] = "balanced"
    ctt: str | None = Field(default=None, description="the instance as ITC-2007 .ctt text")
    instance: JsonObject | None = Field(default=None, description="the instance in its JSON form")
    variants: int = Field(default=3, ge=1, le=LIMITS["variants"], description="how many distinct timetables to return")
    seed: int = Field(default=0, ge=0, description="the same seed gives the same variants")
    islands: int | None = Field(default=None, ge=1, le=LIMITS["islands"])
    epochs: int | None = Field(default=None, ge=1, le=LIMITS["epochs"])
    generations: int | None = Field(default=None, ge=1, le=LIMITS["generations"], description="per island per epoch")
    population: int | None = Field(default=None, ge=2, le=LIMITS["population"])
    topology: Literal["ring", "full", "none"] | None = None
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)


@router.post(
    "/api/generate_variants",
    status_code=202,
    response_model=JobOut,
    responses={
        200: {"model": JobOut, "description": "an idempotency key returned an earlier job"},
        **error_responses(429, 503),
    },
)
async def generate_variants(body: GenerateVariantsRequest, request: Request) -> JSONResponse:
    """Queue a timetable job; 422 names the field (for ``.ctt`` text, the line and what was expected)."""
    job_input: dict[str, Any] = {
        key: value
        for key, value in body.model_dump(
            exclude={"organization_id", "semester", "academic_year", "idempotency_key"}
        ).items()
        if value is not None
    }
    job_input["meta"] = {
        "organization_id": body.organization_id,
        "semester": body.semester,
        "academic_year": body.academic_year,
    }
    # Checked here with the request's own field names (`ctt`, `instance.rooms[2]`, ...).
    await run_in_threadpool(check_input, job_input, "")
    service = request.app.state.jobs
    job = await run_in_threadpool(
        service.submit,
        "timetable",
        job_input,
        idempotency_key=body.idempotency_key,
        owner=owner_of(request) or "",
    )
    out = JobOut(**job).model_dump(mode="json")
    return JSONResponse(
        out, status_code=202 if job.get("created") else 200, headers={"Location": f"/v1/jobs/{job['id']}"}
    )

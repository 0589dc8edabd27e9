"""``GET /v1/models``: the OpenAI list shape, with each model's residency per worker."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from modelq.models.listing import model_listing

router = APIRouter(tags=["models"])


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    """Models, OpenAI-style (`{"object": "list", "data": [{"id": ...}]}`), with residency per worker."""
    return await run_in_threadpool(model_listing, request.app.state.jobs.app)

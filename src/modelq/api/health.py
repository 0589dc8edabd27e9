"""Liveness and readiness: /healthz answers while the process runs; /readyz checks its dependencies."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from modelq.broker import check_broker

router = APIRouter(tags=["health"])


class ReadyOut(BaseModel):
    ready: bool
    checks: dict[str, dict[str, Any]] = Field(
        description="broker, database, workers: each {ok, ...} or {ok: false, error}"
    )


@router.get("/healthz")
async def healthz() -> dict:
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=ReadyOut,
    responses={503: {"model": ReadyOut, "description": "not ready: a check failed (see `checks`)"}},
)
async def readyz(request: Request) -> JSONResponse:
    """Ready when the broker and the database answer and at least one worker replies to a ping."""
    service = request.app.state.jobs
    checks: dict[str, dict] = {}

    def probe(name: str, fn) -> None:  # noqa: ANN001
        try:
            detail = fn()
            checks[name] = {"ok": True, **(detail or {})}
        except Exception as exc:
            checks[name] = {"ok": False, "error": str(exc)}

    def workers() -> dict:
        names = service.workers(timeout=1.0)
        if not names:
            raise RuntimeError("no worker answered a ping")
        return {"workers": names}

    await run_in_threadpool(probe, "broker", lambda: check_broker(service.app))
    await run_in_threadpool(probe, "database", lambda: service.store.ping())
    await run_in_threadpool(probe, "workers", workers)
    ready = all(check["ok"] for check in checks.values())
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

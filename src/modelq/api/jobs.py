"""The generic job endpoints: /v1/jobs, events, artifacts, /v1/owners and /v1/tasks."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse

from modelq.api.auth import owner_of
from modelq.api.errors import responses as error_responses
from modelq.api.schemas import JobList, JobOut, JobRequest, OwnerList, OwnerOut, TaskOut, event_stream
from modelq.errors import InvalidInput, JobTimeout
from modelq.jobs.dispatch import weight_of
from modelq.jobs.service import JobService
from modelq.jobs.status import JobStatus

router = APIRouter(tags=["jobs"])

#: The longest a GET /v1/jobs/{id}?wait= long-poll holds the connection.
MAX_WAIT_SECONDS = 30.0
EVENT_POLL_SECONDS = 0.25
EVENT_HEARTBEAT_SECONDS = 15.0
#: The largest offset the job store's databases take (SQLite and PostgreSQL: a signed 64-bit integer).
MAX_OFFSET = 2**63 - 1


def _service(request: Request) -> JobService:
    return request.app.state.jobs


def _job_response(job: dict) -> JSONResponse:
    finished = JobStatus(job["status"]).finished
    return JSONResponse(JobOut(**job).model_dump(mode="json"), status_code=200 if finished else 202)


@router.post(
    "/v1/jobs",
    status_code=202,
    response_model=JobOut,
    responses={
        200: {"model": JobOut, "description": "an idempotency key returned an earlier job"},
        **error_responses(404, 429, 503),
    },
)
async def submit_job(body: JobRequest, request: Request) -> JSONResponse:
    """Submit a job; answers 202 with its id at once (200 when an idempotency key returned an earlier job)."""
    job = await run_in_threadpool(
        _service(request).submit,
        body.task,
        body.input,
        priority=body.priority,
        idempotency_key=body.idempotency_key,
        owner=owner_of(request) or "",
    )
    return JSONResponse(JobOut(**job).model_dump(mode="json"), status_code=202 if job.get("created") else 200)


@router.get("/v1/jobs", response_model=JobList)
async def list_jobs(
    request: Request,
    status: str | None = None,
    task: str | None = None,
    queue: str | None = None,
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0, le=MAX_OFFSET),
) -> JobList:
    """Jobs, newest first, filtered by status, task or queue."""
    most = _service(request).settings.max_page_size
    if limit > most:
        raise InvalidInput(
            f"limit must be at most {most} (MODELQ_MAX_PAGE_SIZE), got {limit}", field="limit", limit=most
        )
    page = await run_in_threadpool(
        _service(request).list,
        owner=owner_of(request),
        status=status,
        task=task,
        queue=queue,
        limit=limit,
        offset=offset,
    )
    return JobList(jobs=[JobOut(**job) for job in page.jobs], total=page.total, limit=limit, offset=offset)


@router.get("/v1/owners", response_model=OwnerList)
async def list_owners(request: Request) -> OwnerList:
    """Queued (and held for their turn) and running jobs per owner, with each owner's fair-share weight;
    with API keys, the caller's own only."""
    service, owner = _service(request), owner_of(request)
    counts = await run_in_threadpool(service.store.owner_counts, owner)
    return OwnerList(
        owners=[
            OwnerOut(owner=name, weight=weight_of(service.settings, name), **row)
            for name, row in sorted(counts.items())
        ]
    )


@router.get(
    "/v1/jobs/{job_id}",
    response_model=JobOut,
    responses={202: {"model": JobOut, "description": "queued or running"}, **error_responses(404)},
)
async def get_job(
    job_id: str,
    request: Request,
    wait: float = Query(
        0,
        ge=0,
        le=MAX_WAIT_SECONDS,
        allow_inf_nan=False,
        description="long-poll: wait up to this many seconds for the job to finish",
    ),
) -> JSONResponse:
    """A job: 202 while queued or running (with progress and queue position), 200 once finished."""
    service = _service(request)
    if wait > 0:
        try:
            return _job_response(await run_in_threadpool(service.wait, job_id, wait, owner_of(request)))
        except JobTimeout:
            pass
    return _job_response(await run_in_threadpool(service.get, job_id, owner_of(request)))


@router.delete("/v1/jobs/{job_id}", response_model=JobOut, responses=error_responses(404))
async def cancel_job(job_id: str, request: Request) -> JSONResponse:
    """Cancel a job: a queued job never runs; a running job stops at its next progress point."""
    job = await run_in_threadpool(_service(request).cancel, job_id, owner_of(request))
    return JSONResponse(JobOut(**job).model_dump(mode="json"), status_code=200)


@router.get(
    "/v1/jobs/{job_id}/events",
    response_class=StreamingResponse,
    responses={**event_stream("a `job` event on each change, then `end`", ("job", "end")), **error_responses(404)},
)
async def job_events(job_id: str, request: Request) -> StreamingResponse:
    """Server-Sent Events: a `job` event on every change of status or progress, `end` when finished."""
    service = _service(request)
    owner = owner_of(request)
    await run_in_threadpool(service.get, job_id, owner)  # 404 before the stream starts

    async def stream() -> AsyncIterator[str]:
        last = None
        idle = 0.0
        while True:
            job = await run_in_threadpool(service.get, job_id, owner)
            state = (job["status"], job["progress"]["fraction"], job["progress"]["message"], job.get("queue_position"))
            if state != last:
                last = state
                idle = 0.0
                yield f"event: job\ndata: {json.dumps(JobOut(**job).model_dump(mode='json'))}\n\n"
            if JobStatus(job["status"]).finished:
                yield f"event: end\ndata: {json.dumps({'id': job_id, 'status': job['status']})}\n\n"
                return
            if await request.is_disconnected():
                return
            await asyncio.sleep(EVENT_POLL_SECONDS)
            idle += EVENT_POLL_SECONDS
            if idle >= EVENT_HEARTBEAT_SECONDS:
                idle = 0.0
                yield ": keep-alive\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@router.get(
    "/v1/jobs/{job_id}/artifacts/{name}",
    response_class=FileResponse,
    responses={
        200: {
            "description": "the file, as the media type its name implies",
            "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
        },
        **error_responses(404),
    },
)
async def job_artifact(job_id: str, name: str, request: Request) -> Response:
    """A file the job produced (an image, a document)."""
    path = await run_in_threadpool(_service(request).artifact_path, job_id, name, owner_of(request))
    return FileResponse(path)


@router.get("/v1/tasks", response_model=list[TaskOut])
async def list_tasks(request: Request) -> list[TaskOut]:
    """The tasks this deployment can run."""
    service = _service(request)
    return [
        TaskOut(name=name, queue=service.settings.queue_for(name, spec.queue), description=spec.description)
        for name, spec in sorted(service.tasks().items())
    ]

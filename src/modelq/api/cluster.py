"""The cluster at a glance, and every job's changes as one stream.

* ``GET /v1/cluster``: the workers that answer (Celery's own ``inspect``: ping, stats, active,
  active queues), each with the models its processes hold and their memory; the queues with
  their depth in the broker and their queued jobs in the job store; the models; job counts.
* ``GET /v1/cluster/events``: the same report as Server-Sent Events (a ``cluster`` event every
  few seconds), for a page that stays up to date.
* ``GET /v1/events``: Server-Sent Events, a ``job`` event (the job record without its input
  and result) each time any job is created or changes status, progress or queue position.

Celery's control calls and the database block, so they run in the thread pool.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from modelq.api.auth import owner_of
from modelq.api.errors import responses as error_responses
from modelq.api.schemas import JobOut, event_stream
from modelq.errors import BrokerUnavailable, ModelqError
from modelq.inspection import pool_name
from modelq.jobs.records import record_dict
from modelq.models.listing import model_listing
from modelq.ops import queue_rows

router = APIRouter(tags=["cluster"])

#: How long workers have to answer a ping; the other inspect calls return once they all have.
PING_TIMEOUT_SECONDS = 0.5
INSPECT_TIMEOUT_SECONDS = 1.0
#: Reports younger than this are shared by every client asking.
REPORT_CACHE_SECONDS = 1.0
CLUSTER_EVENT_SECONDS = 2.0
JOB_POLL_SECONDS = 0.5
HEARTBEAT_SECONDS = 15.0
#: Finished jobs are looked for this far behind the last poll (clocks of other processes, slow commits).
FINISHED_LOOKBACK = timedelta(seconds=5)
MAX_ACTIVE_JOBS = 2000

_report_lock = threading.Lock()
_report_cache: dict[int, tuple[float, dict[str, Any]]] = {}


# The cluster report ----------------------------------------------------------------------


def _inspect(app: Any) -> dict[str, dict[str, Any]]:
    """What each answering worker says about itself, keyed by worker name."""
    names = sorted(name for reply in (app.control.ping(timeout=PING_TIMEOUT_SECONDS) or []) for name in reply)
    if not names:
        return {}
    # With a limit of every worker that answered the ping, each call returns as soon as they all have.
    inspector = app.control.inspect(destination=names, timeout=INSPECT_TIMEOUT_SECONDS, limit=len(names))
    stats = inspector.stats() or {}
    active = inspector.active() or {}
    queues = inspector.active_queues() or {}
    return {
        name: {"stats": stats.get(name) or {}, "active": active.get(name) or [], "queues": queues.get(name) or []}
        for name in names
    }


def _worker_row(name: str, seen: dict[str, Any] | None, models: list[dict[str, Any]], settings: Any) -> dict[str, Any]:
    stats = (seen or {}).get("stats") or {}
    # Workers name the queues they consume as the broker knows them (with MODELQ_QUEUE_PREFIX).
    logical = settings.logical_queue
    pool = stats.get("pool") or {}
    resident = [m for m in models if m["resident"]]
    return {
        "name": name,
        "online": seen is not None,
        "pid": stats.get("pid"),
        "pool": pool_name(pool.get("implementation")),
        "concurrency": pool.get("max-concurrency"),
        "processes": pool.get("processes") or [],
        "processed": sum((stats.get("total") or {}).values()),
        "uptime": stats.get("uptime"),
        "rss_bytes": (stats.get("rusage") or {}).get("maxrss", 0) * 1024 or None,  # maxrss is in KiB on Linux
        "active": [
            {"id": t.get("id"), "task": t.get("name"), "started": t.get("time_start"), "pid": t.get("worker_pid")}
            for t in (seen or {}).get("active", [])
        ],
        "queues": sorted(logical(q["name"]) for q in (seen or {}).get("queues", []) if q.get("name")),
        "models": models,
        "resident_bytes": sum(m["bytes"] or 0 for m in resident),
    }


def cluster_report(app: Any) -> dict[str, Any]:
    """Workers, queues, models and job counts, as ``GET /v1/cluster`` answers them."""
    from kombu.utils.url import maybe_sanitize_url

    runtime = app.modelq
    try:
        seen = _inspect(app)
    except Exception as exc:  # the control calls go through the broker
        raise BrokerUnavailable(f"cannot reach the broker to ask the workers: {exc}") from exc
    models = model_listing(app)["data"]
    per_worker: dict[str, list[dict[str, Any]]] = {}
    for model in models:
        for row in model["workers"]:
            held = {key: value for key, value in row.items() if key != "worker"}
            per_worker.setdefault(row["worker"], []).append({"model": model["id"], **held})
    workers = [
        _worker_row(name, seen.get(name), per_worker.get(name, []), runtime.settings)
        for name in sorted({*seen, *per_worker})
    ]

    consumers: dict[str, list[str]] = {}
    for worker in workers:
        for queue in worker["queues"]:
            consumers.setdefault(queue, []).append(worker["name"])
    try:
        queues = queue_rows(app, consumers)
    except Exception as exc:
        raise BrokerUnavailable(f"cannot reach the broker to read queue depths: {exc}") from exc
    return {
        "broker": maybe_sanitize_url(app.conf.broker_url),
        "workers": workers,
        "queues": queues,
        "models": models,
        "jobs": runtime.store.counts(),
        "at": datetime.now(timezone.utc).isoformat(),
    }


def cached_cluster_report(app: Any) -> dict[str, Any]:
    """The report, shared by every client asking within :data:`REPORT_CACHE_SECONDS`."""
    with _report_lock:
        at, report = _report_cache.get(id(app), (0.0, None))
        if report is None or time.monotonic() - at > REPORT_CACHE_SECONDS:
            report = cluster_report(app)
            _report_cache[id(app)] = (time.monotonic(), report)
        return report


def for_owner(report: dict[str, Any], store: Any, owner: str | None) -> dict[str, Any]:
    """The report as ``owner`` may see it: the ids of other owners' running jobs are blanked out."""
    if owner is None:
        return report
    workers = []
    for worker in report["workers"]:
        active = [
            task if task.get("id") and store.get(task["id"], owner, with_position=False) else {**task, "id": None}
            for task in worker["active"]
        ]
        workers.append({**worker, "active": active})
    return {**report, "workers": workers}


def _problem(exc: Exception) -> dict[str, Any]:
    """An error as the API's error body."""
    return exc.to_dict() if isinstance(exc, ModelqError) else {"error": type(exc).__name__, "message": str(exc)}


def _app(request: Request) -> Any:
    return request.app.state.jobs.app


@router.get("/v1/cluster", responses=error_responses(503))
def get_cluster(request: Request) -> dict[str, Any]:
    """Workers (with their resident models and memory), queues and their depths, models, job counts."""
    return for_owner(cached_cluster_report(_app(request)), request.app.state.jobs.store, owner_of(request))


@router.get(
    "/v1/cluster/events",
    response_class=StreamingResponse,
    responses=event_stream(
        "a `cluster` event with the report every few seconds (`problem` when it fails)", ("cluster", "problem")
    ),
)
async def cluster_events(request: Request) -> StreamingResponse:
    """Server-Sent Events: a `cluster` event with the report every few seconds."""
    app, store, owner = _app(request), request.app.state.jobs.store, owner_of(request)

    def report_for_owner() -> dict[str, Any]:
        return for_owner(cached_cluster_report(app), store, owner)

    async def stream() -> AsyncIterator[str]:
        while not await request.is_disconnected():
            try:
                report = await run_in_threadpool(report_for_owner)
                yield f"event: cluster\ndata: {json.dumps(report, default=str)}\n\n"
            except Exception as exc:  # a broker that went away: say so, and keep trying
                yield f"event: problem\ndata: {json.dumps(_problem(exc))}\n\n"
            await asyncio.sleep(CLUSTER_EVENT_SECONDS)

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


# Every job's changes ---------------------------------------------------------------------


def _light_record(row: Any) -> dict[str, Any]:
    return JobOut(**record_dict({**row, "input": None, "result": None})).model_dump(mode="json")


def changed_jobs(store: Any, since: datetime, owner: str | None) -> list[dict[str, Any]]:
    """Jobs that may have changed since ``since`` (see :meth:`JobStore.changed_since`), as clients see them."""
    return [
        {**_light_record(row), "queue_position": row["queue_position"]}
        for row in store.changed_since(since, owner, limit=MAX_ACTIVE_JOBS)
    ]


def _state(job: dict[str, Any]) -> tuple:
    return (
        job["status"],
        job["progress"]["fraction"],
        job["progress"]["message"],
        job["queue_position"],
        job["worker"],
        job["attempts"],
    )


@router.get(
    "/v1/events",
    response_class=StreamingResponse,
    responses=event_stream("a `job` event whenever any job is created or changes", ("job",)),
)
async def all_job_events(request: Request) -> StreamingResponse:
    """Server-Sent Events: a `job` event (the record without input and result) whenever any job
    is created or changes; first one for each queued, running or just finished job."""
    store = request.app.state.jobs.store
    owner = owner_of(request)

    async def stream() -> AsyncIterator[str]:
        last: dict[str, tuple] = {}
        since = datetime.now(timezone.utc) - FINISHED_LOOKBACK
        idle = 0.0
        yield ": connected\n\n"
        while not await request.is_disconnected():
            polled_at = datetime.now(timezone.utc)
            jobs = await run_in_threadpool(changed_jobs, store, since, owner)
            since = polled_at - FINISHED_LOOKBACK
            current = {}
            for job in jobs:
                state = current[job["id"]] = _state(job)
                if last.get(job["id"]) != state:
                    idle = 0.0
                    yield f"event: job\ndata: {json.dumps(job)}\n\n"
            last = current  # jobs out of the window are finished and stay as they were
            await asyncio.sleep(JOB_POLL_SECONDS)
            idle += JOB_POLL_SECONDS
            if idle >= HEARTBEAT_SECONDS:
                idle = 0.0
                yield ": keep-alive\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

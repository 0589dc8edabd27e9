"""``GET /v1/models``: the OpenAI list shape, with each model's residency per worker."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from modelq.models.registry import ModelRegistry

router = APIRouter(tags=["models"])


def model_listing(app: Any) -> dict[str, Any]:
    """Declared models and what every worker process reports holding (used by the CLI too)."""
    runtime = app.modelq
    declared = ModelRegistry(runtime.settings).all()
    rows = runtime.store.residency()
    names = list(dict.fromkeys([*declared, *(row["model"] for row in rows)]))
    data = []
    for name in names:
        spec = declared.get(name)
        workers = [
            {k: row[k] for k in ("worker", "pid", "device", "resident", "bytes", "loads", "evictions", "hits",
                                 "load_seconds", "last_used", "updated_at")}  # fmt: skip
            for row in rows
            if row["model"] == name
        ]
        data.append(
            {
                "id": name,
                "object": "model",
                "owned_by": "modelq",
                "declared": None if spec is None else {
                    "loader": spec.loader if isinstance(spec.loader, str) else f"{spec.loader.__module__}:{spec.loader.__qualname__}",
                    "source": spec.source, "device": spec.device, "memory": spec.memory, "pinned": spec.pinned,
                    "keep_alive": spec.keep_alive, "preload": spec.preload,
                },
                "resident_on": [w["worker"] for w in workers if w["resident"]],
                "workers": workers,
            }
        )  # fmt: skip
    return {"object": "list", "data": data}


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    """Models, OpenAI-style (`{"object": "list", "data": [{"id": ...}]}`), with residency per worker."""
    return await run_in_threadpool(model_listing, request.app.state.jobs.app)

"""Declared models and what every worker process reports holding: ``GET /v1/models`` and
``modelq inspect models`` show this (the CLI without the API's dependencies)."""

from __future__ import annotations

from typing import Any

from modelq.models.registry import ModelRegistry


def model_listing(app: Any) -> dict[str, Any]:
    """The OpenAI list shape (``{"object": "list", "data": [...]}``), each model with its residency per worker."""
    runtime = app.modelq
    declared = ModelRegistry(runtime.settings).all()
    rows = runtime.store.residency()
    names = list(dict.fromkeys([*declared, *(row["model"] for row in rows)]))
    data = []
    for name in names:
        spec = declared.get(name)
        workers = [
            {
                k: row[k]
                for k in (
                    "worker",
                    "pid",
                    "device",
                    "resident",
                    "bytes",
                    "loads",
                    "evictions",
                    "hits",
                    "load_seconds",
                    "last_used",
                    "updated_at",
                )
            }
            for row in rows
            if row["model"] == name
        ]
        data.append(
            {
                "id": name,
                "object": "model",
                "owned_by": "modelq",
                "declared": None
                if spec is None
                else {
                    "loader": spec.loader
                    if isinstance(spec.loader, str)
                    else f"{spec.loader.__module__}:{spec.loader.__qualname__}",
                    "source": spec.source,
                    "device": spec.device,
                    "memory": spec.memory,
                    "pinned": spec.pinned,
                    "keep_alive": spec.keep_alive,
                    "preload": spec.preload,
                },
                "resident_on": [w["worker"] for w in workers if w["resident"]],
                "workers": workers,
            }
        )
    return {"object": "list", "data": data}

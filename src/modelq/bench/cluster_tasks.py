"""The task and loader of the ``cluster`` scenario, registered like a user's module.

Workers get this module through ``MODELQ_IMPORTS=modelq.bench.cluster_tasks``; the bench
process imports it too, so its client knows the task. Nothing here touches the CPU: a load
sleeps (reading weights) and a job sleeps (an accelerator at work), so several workers on a
small machine measure scheduling, not contention for cores.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import modelq

#: ``load_sleeper`` as a loader name for a model declaration.
LOADER = "modelq.bench.cluster_tasks:load_sleeper"
#: The default job length in seconds.
JOB_SECONDS = 0.1


@dataclass(frozen=True)
class Sleeper:
    """A stand-in model: it only knows its own name, so a job can prove which model it got."""

    name: str


def load_sleeper(spec: Any) -> Sleeper:
    """Loader for the ``cluster`` models: sleeps ``options.load_seconds`` (default 2), then returns a small object."""
    time.sleep(float(spec.options.get("load_seconds", 2.0)))  # reading weights, as a real model would
    return Sleeper(spec.name)


@modelq.task("bench.cluster_job", models=["m0"], model_arg="model")
def cluster_job(model: str = "m0", job_seconds: float = JOB_SECONDS) -> dict[str, Any]:
    """Hold ``model`` for ``job_seconds`` with the CPU free (scenario ``cluster``); answers the model it got."""
    loaded = modelq.get_model(model)
    time.sleep(job_seconds)  # the accelerator's share of the job: the CPU stays free
    return {"model": loaded.name}

"""``echo`` and ``sleep``: the smallest jobs, for checking a deployment end to end."""

from __future__ import annotations

import time
from typing import Any

from modelq.tasks import progress, task


@task("echo", queue="default")
def echo(**input: Any) -> dict[str, Any]:
    """Return the input unchanged."""
    return input


@task("sleep", queue="default")
def sleep(seconds: float = 1.0, steps: int = 10) -> dict[str, Any]:
    """Sleep for ``seconds``, reporting progress ``steps`` times (a cancellable long job)."""
    steps = max(1, int(steps))
    for i in range(steps):
        time.sleep(float(seconds) / steps)
        progress((i + 1) / steps, f"step {i + 1}/{steps}")
    return {"slept": float(seconds)}

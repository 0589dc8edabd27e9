"""``echo`` and ``sleep``: the smallest jobs, for checking a deployment end to end."""

from __future__ import annotations

import time
from typing import Any

from modelq.errors import InvalidInput
from modelq.tasks import progress, task


@task("echo", queue="default")
def echo(**input: Any) -> dict[str, Any]:
    """Return the input unchanged."""
    return input


#: The longest ``sleep`` job: it is for checking a deployment, not for holding a worker's slot.
MAX_SLEEP_SECONDS = 3600.0
MAX_SLEEP_STEPS = 10_000


def _validate(data: dict[str, Any], _settings: Any) -> None:
    seconds, steps = data.get("seconds", 1.0), data.get("steps", 10)
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 <= seconds <= MAX_SLEEP_SECONDS:
        raise InvalidInput(
            f"seconds must be a number from 0 to {MAX_SLEEP_SECONDS:g}, got {seconds!r}",
            field="seconds",
            limit=MAX_SLEEP_SECONDS,
        )
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_SLEEP_STEPS:
        raise InvalidInput(
            f"steps must be an integer from 1 to {MAX_SLEEP_STEPS}, got {steps!r}", field="steps", limit=MAX_SLEEP_STEPS
        )


@task("sleep", queue="default", validate=_validate)
def sleep(seconds: float = 1.0, steps: int = 10) -> dict[str, Any]:
    """Sleep for ``seconds`` (0 to an hour), reporting progress ``steps`` times (a cancellable long job)."""
    _validate({"seconds": seconds, "steps": steps}, None)
    for i in range(steps):
        time.sleep(float(seconds) / steps)
        progress((i + 1) / steps, f"step {i + 1}/{steps}")
    return {"slept": float(seconds)}

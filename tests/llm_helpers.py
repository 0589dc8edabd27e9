"""Helpers for the ``llm`` tests: the stand-in OpenAI server, settings that point workers at it,
an ``io`` worker, and the check that a stream of requests kept to a rate limit."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from conftest import child_env
from modelq.testing import worker_command
from modelq.testing.llm_stub import Received, Reply, StubLLMServer

__all__ = ["Received", "Reply", "StubLLMServer", "busiest_window", "llm_env", "start_io_worker"]


def llm_env(endpoints: dict[str, dict[str, Any]], **settings: Any) -> dict[str, str]:
    """``MODELQ_*`` variables for these endpoints and ``llm_*`` settings, as a deployment would set them."""
    env = {"MODELQ_LLM_ENDPOINTS": json.dumps(endpoints)}
    env.update({f"MODELQ_{key.upper()}": str(value) for key, value in settings.items()})
    return env


def start_io_worker(env: dict[str, str], hostname: str, concurrency: int = 4) -> subprocess.Popen:
    """``modelq worker -Q io`` (the queue's own pool: threads) as a subprocess."""
    return subprocess.Popen(
        worker_command("io", hostname, concurrency=concurrency),
        env=child_env(**env),
    )


def busiest_window(times: list[float], width: float) -> int:
    """The most requests that arrived within any ``width`` seconds."""
    ordered = sorted(times)
    best, start = 0, 0
    for end, at in enumerate(ordered):
        while at - ordered[start] > width:
            start += 1
        best = max(best, end - start + 1)
    return best

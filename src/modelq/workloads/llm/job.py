"""One ``llm`` job from start to result: map the prompts, report progress, honour cancel, reduce.

The job's own thread (a Celery pool thread) only watches: the calls run on the process's call
threads (:mod:`.fanout`). Every :data:`PROGRESS_TICK` it turns the count of finished calls into
``progress(completed / total)`` (written only when it changed, or once a second as the cancel
check), so the job store sees a handful of writes a second per job whatever the calls in flight.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from modelq.errors import ConfigError, ModelqError, TaskCancelled
from modelq.tasks import JobContext, current_job
from modelq.workloads.llm.fanout import Caller, Item, MapRun, call_pool, endpoint_for
from modelq.workloads.llm.ratelimit import limiter_for
from modelq.workloads.llm.retry import RetryPolicy
from modelq.workloads.llm.schema import LLMInput, check_llm_input

#: Seconds between looks at the finished-call count.
PROGRESS_TICK = 0.25
#: With nothing new, progress is still written this often: that write is where a cancel is seen.
IDLE_WRITE = 1.0
#: The artifact a cancelled job leaves with what finished.
PARTIAL_ARTIFACT = "results.json"


class LLMJobFailed(ModelqError):
    """An ``all_or_nothing`` job stopped at its first failed call."""


def run_job(data: dict[str, Any], settings: Any) -> dict[str, Any]:
    """Run one ``llm`` job (see :func:`modelq.workloads.llm.task.llm` for the input).

    Returns:
        ``{"model", "endpoint", "results": [{"index", "text", "usage", "finish_reason", "attempts",
        "error"}, ...], "reduce", "total", "succeeded", "failed", "usage"}``, results in input order.

    Raises:
        InvalidInput: the input does not fit (also checked at submit time).
        ConfigError: the endpoint's API key variable is not set on this worker.
        LLMJobFailed: ``all_or_nothing`` and a call (or the reduce) failed.
        TaskCancelled: the job was cancelled; what finished is saved as ``results.json`` first.
    """
    resolved = check_llm_input(data, settings)
    spec, name, endpoint = resolved.input, resolved.endpoint_name, resolved.endpoint
    api_key = None
    if endpoint.api_key_env:
        api_key = os.environ.get(endpoint.api_key_env)
        if not api_key:
            raise ConfigError(
                f"llm_endpoints.{name}.api_key_env",
                f"environment variable {endpoint.api_key_env} is not set on this worker",
            )
    try:
        ctx: JobContext | None = current_job()
    except RuntimeError:  # called as a plain function
        ctx = None
    size = settings.llm.max_in_flight
    pool = call_pool(size)
    chat, cooldown = endpoint_for(name, endpoint.base_url, api_key, size)
    caller = Caller(
        endpoint=chat,
        cooldown=cooldown,
        timeout=endpoint.timeout or settings.llm.timeout,
        policy=RetryPolicy(settings.llm.max_retries, settings.llm.retry_backoff, settings.llm.retry_backoff_max),
        limiter=limiter_for(settings, name, endpoint, ctx.store.engine if ctx is not None else None),
    )
    n = len(spec.prompts)
    total = n + (1 if spec.reduce else 0)

    def call(index: int, stop: Any) -> Item:
        return caller.call(_body(spec, spec.messages(index), spec.max_tokens), stop)

    window = min(spec.max_in_flight or size, size)
    mapped = MapRun(pool, n, call, window=window, stop_on_error=spec.all_or_nothing).start()
    _watch(
        mapped, ctx, offset=0, total=total, what="calls", partial=lambda: _result(spec, name, mapped.snapshot(), None)
    )
    results = mapped.snapshot()
    if spec.all_or_nothing and mapped.first_error is not None:
        raise LLMJobFailed(_failure(mapped.first_error, n, results[mapped.first_error]))

    reduced = None
    if spec.reduce:
        texts = [(i, item["text"]) for i, item in enumerate(results) if item["error"] is None and item["text"]]
        if not texts:
            reduced = {
                "text": None,
                "usage": None,
                "finish_reason": None,
                "attempts": 0,
                "error": {"type": "nothing_to_reduce", "status": None, "message": "every prompt failed"},
            }
        else:
            body = _body(spec, spec.reduce_messages(texts), spec.reduce_max_tokens or spec.max_tokens)
            reducing = MapRun(pool, 1, lambda _i, stop: caller.call(body, stop), window=1).start()
            _watch(
                reducing, ctx, offset=n, total=total, what="reduce", partial=lambda: _result(spec, name, results, None)
            )
            reduced = reducing.snapshot()[0]
        if spec.all_or_nothing and reduced["error"] is not None:
            raise LLMJobFailed(f"the reduce call failed: {reduced['error']['message']}; all_or_nothing is set")
    return _result(spec, name, results, reduced)


def _body(spec: LLMInput, messages: list[dict[str, Any]], max_tokens: int | None) -> dict[str, Any]:
    body: dict[str, Any] = {"model": spec.model, "messages": messages}
    if spec.temperature is not None:
        body["temperature"] = spec.temperature
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return body


def _watch(run: MapRun, ctx: JobContext | None, *, offset: int, total: int, what: str, partial: Any) -> None:
    """Wait for ``run``, reporting progress; on cancel stop issuing calls, save what finished, re-raise."""
    written, written_at = -1, time.monotonic()
    try:
        while not run.done.wait(PROGRESS_TICK):
            if ctx is None:
                continue
            done, now = offset + run.completed, time.monotonic()
            if done != written or now - written_at >= IDLE_WRITE:
                message = f"{run.completed}/{run.n} {what}" if what == "calls" else "reduce"
                if run.failed:
                    message += f" ({run.failed} failed)"
                ctx.progress(done / total, message)
                written, written_at = done, now
    except TaskCancelled:
        run.stop()
        if ctx is not None:
            ctx.save_artifact(PARTIAL_ARTIFACT, json.dumps(partial()).encode(), "application/json")
        raise
    except BaseException:
        run.stop()  # a time limit, a worker shutting down: issue nothing more
        raise


def _failure(index: int, n: int, item: Item) -> str:
    return f"prompt {index} of {n} failed: {item['error']['message']}; all_or_nothing is set, so the job fails"


def _result(spec: LLMInput, endpoint: str, results: list[Item], reduced: Item | None) -> dict[str, Any]:
    usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    for item in [*results, *([reduced] if reduced else [])]:
        for key in usage:
            usage[key] += int((item.get("usage") or {}).get(key, 0))
    failed = sum(1 for item in results if item["error"] is not None)
    return {
        "model": spec.model,
        "endpoint": endpoint,
        "results": [{"index": i, **item} for i, item in enumerate(results)],
        "reduce": reduced,
        "total": len(results),
        "succeeded": len(results) - failed,
        "failed": failed,
        "usage": usage,
    }

"""The ``llm`` task: registration and the submit-time check. Importing this module is cheap
(pydantic only); the HTTP client and the call threads are loaded when a job runs."""

from __future__ import annotations

from typing import Any

from modelq.tasks import current_settings, task
from modelq.workloads.llm.schema import check_llm_input


def _validate(data: dict[str, Any], settings: Any) -> None:
    """Prompts, model and limits are checked at submit time: a 422 naming the field, before anything is queued."""
    check_llm_input(data, settings or current_settings())


@task("llm", queue="io", validate=_validate)
def llm(
    prompts: list,
    model: str,
    system: str | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    reduce: str | None = None,
    reduce_max_tokens: int | None = None,
    all_or_nothing: bool = False,
    max_in_flight: int | None = None,
) -> dict[str, Any]:
    """Prompts against an OpenAI-compatible chat server, many calls in flight; results in order, optional reduce."""
    data = {key: value for key, value in locals().items() if value is not None}
    from modelq.workloads.llm.job import run_job

    return run_job(data, current_settings())

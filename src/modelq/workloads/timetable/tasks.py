"""The ``timetable`` task and the three internal tasks of its island model (see :mod:`.flow`).

Importing this module registers the tasks and nothing more: numpy is imported when a job runs.
"""

from __future__ import annotations

from typing import Any

from modelq.celery_app import has_result_backend
from modelq.tasks import current_job, progress, task
from modelq.workloads.timetable import flow
from modelq.workloads.timetable.inputs import check_input


def _validate(data: dict[str, Any], settings: Any) -> None:
    """The instance and run settings are checked at submit time, so a malformed ``.ctt`` is
    refused with a 422 naming the line, before anything is queued."""
    check_input(data)


@task(flow.JOB_TASK, queue="cpu", validate=_validate)
def timetable(
    instance: dict | None = None,
    ctt: str | None = None,
    quality_mode: str = "balanced",
    variants: int | None = None,
    seed: int | None = None,
    islands: int | None = None,
    epochs: int | None = None,
    generations: int | None = None,
    population: int | None = None,
    migrants: int | None = None,
    local_search: int | None = None,
    topology: str | None = None,
    fitness: str | None = None,
    anneal: int | None = None,
    time_limit: float | None = None,
    meta: dict | None = None,
) -> dict[str, Any]:
    """Course timetables by a genetic-algorithm island model; returns the best distinct variants."""
    data = {k: v for k, v in locals().items() if v is not None}
    from celery import current_task

    problem, config = check_input(data)
    job = current_job()
    celery_task = current_task._get_current_object()
    if celery_task.request.is_eager or not has_result_backend(celery_task.app):
        # No worker took this job (the local fallback) or chords cannot run: local processes.
        from modelq.workloads.timetable.islands import progress_message, solve_locally

        def on_epoch(cfg: Any, run: dict[str, Any]) -> None:
            job.check_cancelled()
            progress(len(run["history"]) / cfg.epochs, progress_message(cfg, run))

        return {**solve_locally(problem, config, meta=meta, on_epoch=on_epoch), "ran_on": "local"}
    flow.start(celery_task.app, job.id, config)
    job.hand_over()  # the last epoch's `timetable.advance` finishes the job; the slot is free now


@task(flow.ISLAND_TASK, queue="cpu")
def island_epoch(state: dict | None = None, *, job_id: str, config: dict, island: int, epoch: int) -> dict[str, Any]:
    """Internal: one island of a timetable job evolves for one epoch."""
    return flow.island_step(current_job().job(job_id), state, config, island, epoch)


@task(flow.ADVANCE_TASK, queue="cpu")
def advance(results: list, *, job_id: str, config: dict, epoch: int, run: dict) -> dict[str, Any]:
    """Internal: after an epoch of a timetable job, migrate and start the next one (or finish)."""
    from celery import current_task

    return flow.advance_step(current_task.app, current_job().job(job_id), results, config, epoch, run)


@task(flow.ABORT_TASK, queue="cpu")
def abort(task_id: str | None = None, *, job_id: str) -> None:
    """Internal: mark a timetable job failed when a step of its island model failed."""
    flow.abort_step(current_job().job(job_id), task_id)

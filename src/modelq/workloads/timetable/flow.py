"""The island model on Celery: one chord per epoch, so no task ever waits on another.

Epoch ``e`` is a chord: its header is K ``timetable.island`` tasks (one per island, on the
``cpu`` queue, in parallel on whatever workers consume it); its body, ``timetable.advance``,
runs once all K have returned. ``advance`` records the best hard and soft score as the
``timetable`` job's progress, migrates the best timetables between islands and publishes the
chord of epoch ``e + 1``, or, after the last epoch, writes the job's result. The
``timetable`` task itself only validates its input and publishes the first chord, then gives
its worker slot back.

Why a chord per epoch: a task that called ``.get()`` on its islands would hold a worker slot
while it waits, and with every slot held by such waiters the islands could never run (a
deadlock that a single ``-c 1`` worker hits at once). Islands that swapped migrants among
themselves through Redis would need all K running at the same time, which again deadlocks
when there are fewer than K slots. With a chord per epoch every task runs to completion
without waiting, so any number of slots (even one) finishes the job, and Celery's chord
counter (in the result backend) is the only barrier. The tasks are idempotent per epoch: their
ids are derived from the job id, the epoch and the island.

Every epoch's island and advance tasks check the job's status first: once it is cancelled
they skip their work, and no further epoch is published (the job stops after the epoch in
flight). A failing island marks the job failed with its error.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

from modelq.tasks import HandedOverJob
from modelq.workloads.timetable.inputs import RunConfig, check_input
from modelq.workloads.timetable.problem import Instance

log = logging.getLogger(__name__)

JOB_TASK = "timetable"
ISLAND_TASK = "timetable.island"
ADVANCE_TASK = "timetable.advance"
ABORT_TASK = "timetable.abort"

_INSTANCES: OrderedDict[str, tuple[Instance, dict[str, Any]]] = OrderedDict()
_INSTANCE_CACHE_SIZE = 8


def start(app: Any, job_id: str, config: RunConfig) -> None:
    """Publish the first epoch of job ``job_id``."""
    from modelq.workloads.timetable.islands import new_run

    config = config.started(island_slots(app) if config.islands_per_slot else config.islands)
    publish_epoch(app, job_id, config, 0, [None] * config.islands, new_run())


def island_slots(app: Any) -> int:
    """Pool processes of the live workers that read the islands' queue (at least 1)."""
    settings = app.modelq.settings
    queue = settings.broker_queue(settings.queue_for(ISLAND_TASK, "cpu"))
    try:
        inspect = app.control.inspect(timeout=1.0)
        readers = inspect.active_queues() or {}
        stats = inspect.stats() or {}
    except Exception:  # the broker blinked: one island per default slot count
        log.debug("could not count the workers' slots", exc_info=True)
        return 1
    slots = sum(
        int((stats.get(worker) or {}).get("pool", {}).get("max-concurrency") or 1)
        for worker, queues in readers.items()
        if any(q.get("name") == queue for q in queues)
    )
    return max(slots, 1)


def publish_epoch(app: Any, job_id: str, config: RunConfig, epoch: int, states: list[Any], run: dict[str, Any]) -> None:
    from celery import chord

    settings = config.to_dict()
    header = [
        app.signature(
            ISLAND_TASK, args=(states[i],), kwargs={"job_id": job_id, "config": settings, "island": i, "epoch": epoch}
        ).set(task_id=f"{job_id}-e{epoch}-i{i}")
        for i in range(config.islands)
    ]
    body = app.signature(ADVANCE_TASK, kwargs={"job_id": job_id, "config": settings, "epoch": epoch, "run": run})
    body = body.set(task_id=f"{job_id}-e{epoch}-a").on_error(app.signature(ABORT_TASK, kwargs={"job_id": job_id}))
    chord(header, body, app=app).apply_async()


def job_instance(job: HandedOverJob) -> tuple[Instance, dict[str, Any]]:
    """The instance and ``meta`` of a timetable job, read from its input (cached per process)."""
    cached = _INSTANCES.get(job.id)
    if cached is not None:
        _INSTANCES.move_to_end(job.id)
        return cached
    data = job.input()
    instance, _config = check_input(data)
    cached = (instance, data.get("meta") or {})
    _INSTANCES[job.id] = cached
    while len(_INSTANCES) > _INSTANCE_CACHE_SIZE:
        _INSTANCES.popitem(last=False)
    return cached


def island_step(job: HandedOverJob, state: dict | None, config: dict, island: int, epoch: int) -> dict[str, Any]:
    """The body of a ``timetable.island`` task."""
    status = job.status()
    if status != "running":
        return {"island": island, "epoch": epoch, "stopped": status}
    try:
        from modelq.workloads.timetable.islands import run_island_epoch

        instance, _meta = job_instance(job)
        return run_island_epoch(instance, RunConfig.from_dict(config), island, epoch, state)
    except Exception as exc:
        job.fail(exc, where=f"island {island} failed in epoch {epoch + 1}")
        raise


def advance_step(
    app: Any, job: HandedOverJob, results: list[dict], config: dict, epoch: int, run: dict[str, Any]
) -> dict[str, Any]:
    """The body of a ``timetable.advance`` task: progress, migration, next epoch or the result."""
    from modelq.workloads.timetable.islands import advance, finish, progress_message

    status = job.status()
    stopped = next((r["stopped"] for r in results if "stopped" in r), None)
    if status != "running" or stopped:
        log.info("timetable job %s stopped after epoch %d (%s)", job.id, epoch + 1, status)
        return {"epoch": epoch + 1, "stopped": status}
    try:
        cfg = RunConfig.from_dict(config)
        instance, meta = job_instance(job)
        states, run = advance(cfg, epoch, results, run)
        last = epoch + 1 == cfg.epochs
        if not job.progress((epoch + 1) / cfg.epochs, progress_message(cfg, run)):
            return {"epoch": epoch + 1, "stopped": job.status()}
        if not last:
            publish_epoch(app, job.id, cfg, epoch + 1, states, run)
            return {"epoch": epoch + 1, "best": run["history"][-1]}
        result = {**finish(instance, cfg, states, run, meta), "ran_on": "celery"}
    except Exception as exc:
        job.fail(exc, where=f"epoch {epoch + 1} could not advance")
        raise
    job.succeed(result)
    return {"epoch": epoch + 1, "finished": True}


def abort_step(job: HandedOverJob, task_id: str | None) -> None:
    """The errback of an epoch's chord: a step failed without saying why in the job record."""
    job.fail(f"the island model stopped: step {task_id} failed (see that job's error)")

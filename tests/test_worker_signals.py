"""Worker signal handlers act for their own app only: two apps in one process keep apart."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from celery import signals

from modelq.celery_app import create_celery_app
from modelq.config import Settings

pytestmark = pytest.mark.fast


def _app(home: Path):  # noqa: ANN202
    return create_celery_app(Settings(home=home, broker_url="memory://", result_backend="cache+memory://"))


def _running_job(app) -> str:  # noqa: ANN001
    job_id = str(uuid.uuid4())
    store = app.modelq.store
    store.create(id=job_id, task="echo", input={}, queue="default")
    store.mark_running(job_id, worker="w1", task="echo", queue="default", input={})
    return job_id


def test_a_task_failure_signal_reaches_only_the_job_store_of_the_tasks_app(tmp_path: Path) -> None:
    first, second = _app(tmp_path / "a"), _app(tmp_path / "b")
    in_first, in_second = _running_job(first), _running_job(second)
    signals.task_failure.send(sender=first.tasks["echo"], task_id=in_first, exception=TimeoutError("hard time limit"))
    signals.task_failure.send(sender=first.tasks["echo"], task_id=in_second, exception=TimeoutError("hard time limit"))
    failed = first.modelq.store.get(in_first)
    assert failed["status"] == "failed" and failed["failure"]["type"] == "TimeoutError"
    # the second app's job store never heard of the first app's task
    assert second.modelq.store.get(in_second)["status"] == "running"

    signals.task_revoked.send(sender=second.tasks["echo"], request=type("R", (), {"id": in_second})(), terminated=True)
    assert second.modelq.store.get(in_second)["status"] == "cancelled"


def test_the_handlers_live_as_long_as_their_app(tmp_path: Path) -> None:
    app = _app(tmp_path)
    before = len(signals.task_failure.receivers)
    del app
    import gc

    gc.collect()
    signals.task_failure.send(sender=None, task_id="x", exception=None)  # prunes dead receivers
    assert len(signals.task_failure.receivers) < before

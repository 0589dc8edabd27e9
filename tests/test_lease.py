"""A job longer than Redis's visibility timeout runs once: the worker renews its lease while it runs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import _backend_env, start_worker, stop_process, wait_for_worker


@pytest.fixture(params=["embedded", "redis"])
def short_lease(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict]:
    from modelq.broker import EmbeddedRedis
    from modelq.celery_app import create_celery_app
    from modelq.config import load_settings

    home = tmp_path / "home"
    env = {**_backend_env(request.param, home, tag="lease"), "MODELQ_VISIBILITY_TIMEOUT": "2"}
    settings = load_settings(
        home=home, broker_url=env.get("MODELQ_BROKER_URL"), visibility_timeout=2, imports=["modelq_test_tasks"]
    )
    app = create_celery_app(settings, start_broker=True)
    app.modelq.store  # noqa: B018
    # two processes: a redelivered message would find a free one and run beside the first
    worker = start_worker(env, "default", "lease@%h")
    try:
        wait_for_worker(app, "lease@")
        yield {"app": app}
    finally:
        stop_process(worker)
        EmbeddedRedis(home).stop()


def test_a_job_longer_than_the_visibility_timeout_runs_once(short_lease: dict, tmp_path: Path) -> None:
    from modelq.client import Client

    client = Client.in_process(app=short_lease["app"])
    starts = tmp_path / "starts"
    # given a 7 s job and a 2 s visibility timeout (kombu looks for expired messages every second)
    done = client.wait(client.submit("tests.slow_count", {"path": str(starts), "seconds": 7})["id"], timeout=60)
    # then it started once and finished once
    assert done["status"] == "succeeded" and done["result"] == 1 and done["attempts"] == 1
    assert starts.read_text() == "x"

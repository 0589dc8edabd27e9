"""The embedded broker killed and restarted mid-stream: no accepted job is lost, workers consume again."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from conftest import start_worker, stop_process, wait_for, wait_for_worker


def test_embedded_broker_killed_mid_stream_loses_no_accepted_job(home: Path, tmp_path: Path) -> None:
    from modelq.broker import EmbeddedRedis
    from modelq.celery_app import create_celery_app
    from modelq.client import Client
    from modelq.config import load_settings
    from modelq.errors import BrokerUnavailable

    settings = load_settings(home=home, imports=["modelq_test_tasks"])
    app = create_celery_app(settings, start_broker=True)
    app.modelq.store  # noqa: B018
    worker = start_worker({"MODELQ_HOME": str(home)}, "default", "restart@%h")
    try:
        wait_for_worker(app, "restart@")
        client = Client.in_process(app=app)
        broker = EmbeddedRedis(home)
        # given a stream of jobs, some of them waiting in the broker when it dies
        accepted = [client.submit("tests.slow_count", {"path": str(tmp_path / f"j{i}"), "seconds": 0.3})["id"]
                    for i in range(12)]  # fmt: skip
        os.kill(broker.pid(), signal.SIGKILL)
        wait_for(lambda: not broker.ping(), timeout=10, what="the broker to die")
        # while it is down, a submission is refused clearly (not accepted, then lost)
        with pytest.raises(BrokerUnavailable, match="could not publish"):
            client.submit("echo", {"during": "outage"})
        # when it comes back (from its append-only file), more jobs are accepted
        broker.ensure_running()
        accepted += [client.submit("tests.slow_count", {"path": str(tmp_path / f"k{i}"), "seconds": 0.1})["id"]
                     for i in range(6)]  # fmt: skip
        # then every accepted job finishes, each exactly once
        done = [client.wait(job_id, timeout=180) for job_id in accepted]
        assert [d["status"] for d in done] == ["succeeded"] * len(accepted)
        assert all(d["result"] == 1 for d in done)
    finally:
        stop_process(worker)

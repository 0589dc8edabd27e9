"""A worker process killed mid-job: the job runs again; a job that always kills its worker stops, dead-lettered."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import Backend

pytestmark = pytest.mark.parametrize("backend", ["embedded", "redis", "rabbitmq"], indirect=True)


def test_a_job_whose_worker_process_dies_runs_again(backend: Backend, tmp_path: Path) -> None:
    marker = tmp_path / "runs"
    done = backend.client.wait(backend.client.submit("tests.die_once", {"path": str(marker)})["id"], timeout=120)
    assert done["status"] == "succeeded" and done["result"] == 2
    assert done["attempts"] == 2 and len(marker.read_text()) == 2


def test_a_job_that_always_kills_its_worker_stops_and_is_dead_lettered(backend: Backend, tmp_path: Path) -> None:
    from modelq.ops import dead_letters

    marker = tmp_path / "runs"
    job = backend.client.submit("tests.die_always", {"path": str(marker)})
    done = backend.client.wait(job["id"], timeout=180)
    limit = backend.settings.max_deliveries
    # then it ran exactly `max_deliveries` times, and its record says why it stopped
    assert done["status"] == "failed" and len(marker.read_text()) == limit
    assert f"delivered {limit + 1} times" in done["error"] and "ended its worker" in done["error"]
    # and it waits in the dead-letter queue, with what is needed to run it again
    letters = {letter["id"]: letter for letter in dead_letters(backend.app)}
    assert letters[job["id"]]["task"] == "tests.die_always" and letters[job["id"]]["input"] == {"path": str(marker)}
    # and the worker goes on with other jobs
    assert backend.client.run("echo", {"after": "crash"}, timeout=60) == {"after": "crash"}


@pytest.fixture
def two_solo_workers(backend: Backend):  # noqa: ANN201
    """Two more solo-pool workers (the GPU queue's pool) on the backend's broker, with a short visibility timeout."""
    from conftest import start_worker, stop_process, wait_for_worker

    env = {**backend.env, "MODELQ_VISIBILITY_TIMEOUT": "3"}
    workers = {name: start_worker(env, "cpu", f"{name}@%h", "--pool", "solo") for name in ("solo-a", "solo-b")}
    try:
        for name in workers:
            wait_for_worker(backend.app, f"{name}@")
        yield workers
    finally:
        for proc in workers.values():
            stop_process(proc)


def test_a_killed_solo_worker_s_job_is_finished_by_another(
    backend: Backend, two_solo_workers: dict, tmp_path: Path
) -> None:
    import os
    import signal

    from conftest import wait_for

    starts = tmp_path / "starts"
    # given a job running on one of two solo workers, its body started (it counted its start: a kill
    # between the record saying running and the body's first line would leave one start, not two)
    job = backend.client.submit("tests.touch_slowly", {"path": str(starts), "seconds": 4})
    running = wait_for(
        lambda: (
            starts.exists()
            and starts.read_text() == "x"
            and (j := backend.client.get(job["id"]))["status"] == "running"
            and j["worker"]
            and j
        ),
        timeout=60,
        what="the job's body to start",
    )
    victim = running["worker"].split("@")[0]
    # when that whole worker is killed
    os.kill(two_solo_workers[victim].pid, signal.SIGKILL)
    two_solo_workers[victim].wait(timeout=30)
    # then the other one finishes the job, on its second attempt
    done = backend.client.wait(job["id"], timeout=120)
    assert done["status"] == "succeeded" and done["attempts"] == 2
    assert not done["worker"].startswith(victim) and starts.read_text() == "xx"

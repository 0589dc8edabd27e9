"""The job contract, run on every broker: embedded Redis, system Redis, RabbitMQ."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import Backend, wait_for
from modelq.errors import InvalidInput, JobFailed, TaskNotFound


def test_echo_round_trip_records_the_job(backend: Backend) -> None:
    client = backend.client
    # given a submitted echo job
    job = client.submit("echo", {"x": 1, "words": ["a", "b"]})
    assert job["status"] == "queued" and job["created"] is True
    # when it finishes
    done = client.wait(job["id"], timeout=30)
    # then the record holds the result, the worker and one attempt
    assert done["status"] == "succeeded"
    assert done["result"] == {"x": 1, "words": ["a", "b"]}
    assert done["attempts"] == 1
    assert done["worker"].startswith(f"contract-{backend.name}@")
    assert done["started_at"] and done["finished_at"]


def test_progress_is_visible_while_running(backend: Backend) -> None:
    client = backend.client
    job = client.submit("sleep", {"seconds": 3, "steps": 30})
    running = wait_for(
        lambda: (j := client.get(job["id"]))["status"] == "running" and 0 < j["progress"]["fraction"] < 1 and j,
        timeout=30,
        what="progress between 0 and 1",
    )
    assert running["progress"]["message"].startswith("step ")
    done = client.wait(job["id"], timeout=30)
    assert done["status"] == "succeeded" and done["progress"]["fraction"] == 1.0


def test_failure_is_recorded_with_its_error(backend: Backend) -> None:
    client = backend.client
    job = client.submit("tests.fail", {"message": "the disk is full"})
    done = client.wait(job["id"], timeout=30)
    assert done["status"] == "failed"
    assert done["error"] == "ValueError: the disk is full"
    assert done["failure"] == {"type": "ValueError", "message": "the disk is full", "field": None, "details": {}}
    with pytest.raises(JobFailed, match="the disk is full") as failed:
        client.result(job["id"], timeout=5)
    assert failed.value.failure["type"] == "ValueError"


def test_unserialisable_result_fails_clearly(backend: Backend) -> None:
    done = backend.client.wait(backend.client.submit("tests.unserialisable")["id"], timeout=30)
    assert done["status"] == "failed"
    assert "not JSON serializable" in done["error"]


def test_retries_with_backoff_until_success(backend: Backend, tmp_path: Path) -> None:
    client = backend.client
    counter = tmp_path / "attempts"
    done = client.wait(client.submit("tests.flaky", {"path": str(counter), "failures": 2})["id"], timeout=60)
    assert done["status"] == "succeeded"
    assert done["result"] == 3
    assert done["attempts"] == 3


def test_idempotency_key_returns_the_same_job_and_runs_it_once(backend: Backend, tmp_path: Path) -> None:
    client = backend.client
    counter = tmp_path / "runs"
    first = client.submit("tests.count", {"path": str(counter)}, idempotency_key="order-17")
    second = client.submit("tests.count", {"path": str(counter)}, idempotency_key="order-17")
    assert second["id"] == first["id"] and second["created"] is False
    assert client.wait(first["id"], timeout=30)["result"] == 1
    # a third submission after it finished still returns the finished job
    third = client.submit("tests.count", {"path": str(counter)}, idempotency_key="order-17")
    assert third["id"] == first["id"] and third["status"] == "succeeded"
    assert counter.read_text() == "x"


def test_cancelled_queued_job_never_runs(backend: Backend, tmp_path: Path) -> None:
    client = backend.client
    marker = tmp_path / "ran"
    # given a job waiting on the cpu queue, which the worker does not consume yet
    job = client.submit("tests.touch", {"path": str(marker)})
    assert job["queue"] == "cpu"
    assert client.get(job["id"])["queue_position"] == 1
    # when it is cancelled and a worker then consumes that queue
    assert client.cancel(job["id"])["status"] == "cancelled"
    backend.app.control.add_consumer("cpu", destination=[f"contract-{backend.name}@{_host()}"], reply=True)
    try:
        canary = tmp_path / "canary"
        assert (
            client.wait(client.submit("tests.touch", {"path": str(canary)})["id"], timeout=30)["status"] == "succeeded"
        )
    finally:
        backend.app.control.cancel_consumer("cpu", destination=[f"contract-{backend.name}@{_host()}"], reply=True)
    # then the cancelled job stayed cancelled and did nothing
    assert canary.exists()
    assert not marker.exists()
    assert client.get(job["id"])["status"] == "cancelled"


def test_cancel_stops_a_running_job_at_its_next_progress_point(backend: Backend) -> None:
    client = backend.client
    job = client.submit("sleep", {"seconds": 60, "steps": 600})
    wait_for(lambda: client.get(job["id"])["progress"]["fraction"] > 0, timeout=30, what="the job to make progress")
    client.cancel(job["id"])
    # the worker is free again well before the 60 s job would have ended
    follow_up = client.submit("echo", {"after": "cancel"})
    follow_up = client.wait(follow_up["id"], timeout=30)
    assert follow_up["status"] == "succeeded"
    done = client.get(job["id"])
    assert done["status"] == "cancelled"
    assert done["progress"]["fraction"] < 1.0


def test_artifacts_are_stored_with_the_job(backend: Backend) -> None:
    client = backend.client
    done = client.wait(client.submit("tests.artifact", {"text": "hello artifact"})["id"], timeout=30)
    assert done["status"] == "succeeded"
    assert done["artifacts"] == [{"name": "note.txt", "size": 14, "content_type": "text/plain"}]
    assert client.artifact(done["id"], "note.txt") == b"hello artifact"


def test_bad_submissions_are_refused_and_touch_nothing(backend: Backend) -> None:
    client = backend.client
    before = client.list()["total"]
    with pytest.raises(TaskNotFound, match="unknown task 'nope'"):
        client.submit("nope", {})
    with pytest.raises(InvalidInput, match="unexpected keyword argument 'colour'"):
        client.submit("sleep", {"colour": "red"})
    with pytest.raises(InvalidInput, match="priority must be between 0 and 9"):
        client.submit("echo", {}, priority=12)
    assert client.list()["total"] == before


def _host() -> str:
    import socket

    return socket.gethostname()


def test_a_pickled_message_is_refused_and_never_runs(backend: Backend, tmp_path: Path) -> None:
    import uuid

    from modelq.ops import queue_depths

    proof = tmp_path / "pickle-ran"
    # given a message serialised with pickle, published straight to the worker's queue with kombu
    # (pickle would run code on load: the worker must never even decode it)
    backend.app.send_task(
        "tests.count", kwargs={"path": str(proof)}, serializer="pickle", queue="default", task_id=str(uuid.uuid4())
    )
    # then it is dropped from the queue without running
    wait_for(lambda: queue_depths(backend.app, ["default"])["default"] == 0, timeout=30, what="the queue to drain")
    after = backend.client.run("tests.count", {"path": str(tmp_path / "json-ran")}, timeout=60)
    assert after == 1  # the worker is alive and runs the next (JSON) job
    assert not proof.exists()

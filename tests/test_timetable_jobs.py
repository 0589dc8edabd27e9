"""Timetable jobs on real Celery workers: islands as parallel jobs on the cpu queue, progress per
epoch, cancel, the local fallback, and the HTTP endpoints."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Backend, start_worker, stop_process, wait_for, wait_for_worker
from modelq.workloads.timetable import instance_to_dict, parse_ctt, solve
from modelq.workloads.timetable.generate import generate_instance, sample

EMBEDDED = pytest.mark.parametrize("backend", ["embedded"], indirect=True)
PROGRESS = re.compile(r"^epoch (\d+)/(\d+): best hard (\d+), soft (\d+)$")


@pytest.fixture(scope="module")
def cpu_worker(backend: Backend) -> Iterator[str]:
    """A worker with two prefork processes on the cpu queue, where the islands run."""
    prefix = f"timetable-{backend.name}@"
    worker = start_worker(backend.env, "cpu", prefix + "%h")
    try:
        wait_for_worker(backend.app, prefix)
        yield prefix
    finally:
        stop_process(worker)


@pytest.fixture(scope="module")
def planted() -> tuple[Any, list[dict[str, Any]]]:
    return generate_instance(11, courses=24, rooms=4, fill=0.8, curricula=8, unavailability=20)


def without_runner(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k != "ran_on"}


def island_jobs(client: Any, job_id: str) -> list[dict[str, Any]]:
    jobs = client.list(task="timetable.island", limit=500)["jobs"]
    return [j for j in jobs if j["id"].startswith(f"{job_id}-e")]


@EMBEDDED
def test_islands_run_as_parallel_jobs_and_reach_zero_hard_violations(
    backend: Backend, cpu_worker: str, planted
) -> None:
    client = backend.client
    instance, _ = planted
    # given a dense instance with a planted feasible timetable, as JSON
    job = client.submit("timetable", {"instance": instance_to_dict(instance), "quality_mode": "fast", "seed": 3})
    assert job["queue"] == "cpu"
    # when the job finishes on the workers
    done = client.wait(job["id"], timeout=60)
    assert done["status"] == "succeeded", done["error"]
    result = done["result"]
    # then it found a timetable without hard violations, and its record shows the last epoch
    assert result["ran_on"] == "celery" and done["runner"] == "worker"
    assert result["best"] == {"hard": 0, "soft": result["best"]["soft"], "feasible": True}
    assert result["variants"][0]["hard"] == 0
    epochs, islands = result["settings"]["epochs"], result["settings"]["islands"]
    assert done["progress"]["fraction"] == 1.0
    assert PROGRESS.match(done["progress"]["message"]).groups() == (
        str(epochs),
        str(epochs),
        "0",
        str(result["best"]["soft"]),
    )
    # each island of each epoch was a job of its own on the cpu queue, run by the worker
    islands_run = island_jobs(client, job["id"])
    assert sorted(j["id"] for j in islands_run) == sorted(
        f"{job['id']}-e{e}-i{i}" for e in range(epochs) for i in range(islands)
    )
    assert all(j["status"] == "succeeded" and j["worker"].startswith(cpu_worker) for j in islands_run)


@pytest.mark.parametrize("backend", ["embedded", "rabbitmq"], indirect=True)
def test_workers_and_local_processes_give_the_same_result_for_a_seed(backend: Backend, cpu_worker: str) -> None:
    text = sample("small")
    settings = {"quality_mode": "fast", "seed": 9, "islands": 3, "epochs": 3, "generations": 6, "variants": 2}
    on_workers = backend.client.result(backend.client.submit("timetable", {"ctt": text, **settings})["id"], timeout=60)
    local = solve(parse_ctt(text), processes=2, **settings)
    assert without_runner(on_workers) == local
    assert len(on_workers["variants"]) == 2


@EMBEDDED
def test_progress_per_epoch_and_cancel_stops_after_the_epoch_in_flight(backend: Backend, cpu_worker: str) -> None:
    client = backend.client
    # given a long job (many epochs)
    job = client.submit(
        "timetable", {"ctt": sample("medium"), "quality_mode": "fast", "islands": 2, "epochs": 60, "generations": 60}
    )
    # when it has reported a few epochs
    running = wait_for(
        lambda: (
            (j := client.get(job["id"]))["progress"]["message"]
            and int(PROGRESS.match(j["progress"]["message"]).group(1)) >= 2
            and j
        ),
        timeout=60,
        what="two epochs of progress",
    )
    epoch, total, _hard, _soft = map(int, PROGRESS.match(running["progress"]["message"]).groups())
    assert total == 60 and running["progress"]["fraction"] == pytest.approx(epoch / 60)
    assert running["status"] == "running"
    cancelled = client.cancel(job["id"])
    assert cancelled["status"] == "cancelled"
    # then the epoch in flight ends and no further one starts: the workers are free again
    follow_up = client.submit(
        "timetable", {"ctt": sample("small"), "quality_mode": "fast", "epochs": 1, "generations": 2}
    )
    assert client.wait(follow_up["id"], timeout=60)["status"] == "succeeded"
    islands_run = wait_for(
        lambda: (jobs := island_jobs(client, job["id"])) and all(j["status"] == "succeeded" for j in jobs) and jobs,
        timeout=30,
        what="the islands in flight to end",
    )
    last_epoch = max(int(j["id"].rsplit("-e", 1)[1].split("-")[0]) for j in islands_run)
    assert last_epoch <= epoch + 1  # ids count epochs from 0: at most the one in flight when cancelled
    final = client.get(job["id"])
    assert final["status"] == "cancelled" and final["result"] is None
    assert final["progress"]["fraction"] < 1


def test_without_a_worker_the_islands_run_in_local_processes(home: Path) -> None:
    from modelq.client import Client
    from modelq.config import load_settings

    # given a broker no worker consumes, and the local fallback on
    settings = load_settings(home=home, fallback="local", fallback_timeout=0.5)
    client = Client.in_process(settings)
    text = sample("small")
    inputs = {"ctt": text, "quality_mode": "fast", "seed": 4, "islands": 2, "epochs": 2, "generations": 5}
    # when a timetable job is submitted
    job = client.submit("timetable", inputs)
    done = client.wait(job["id"], timeout=120)
    # then it ran here, in processes, with the result a worker would have given
    assert done["status"] == "succeeded", done["error"]
    assert done["runner"] == "local" and done["result"]["ran_on"] == "local"
    assert without_runner(done["result"]) == solve(
        parse_ctt(text), processes=0, **{k: v for k, v in inputs.items() if k != "ctt"}
    )
    assert PROGRESS.match(done["progress"]["message"]).group(1) == "2"


# HTTP ----------------------------------------------------------------------------------------


@pytest.fixture
def http(backend: Backend, cpu_worker: str) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from modelq.api import create_api

    with TestClient(create_api(backend.settings, celery_app=backend.app), base_url="http://localhost") as client:
        yield client


SEED_REQUEST = {"organization_id": "org123", "semester": 1, "academic_year": "2024-25", "quality_mode": "fast"}


@EMBEDDED
def test_generate_variants_answers_202_then_the_variants(http: Any) -> None:
    response = http.post("/api/generate_variants", json={**SEED_REQUEST, "ctt": sample("small"), "variants": 2})
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["task"] == "timetable" and job["status"] == "queued"
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    done = wait_for(
        lambda: (r := http.get(f"/v1/jobs/{job['id']}", params={"wait": 10})).status_code == 200 and r,
        timeout=60,
        what="the job to finish",
    ).json()
    assert done["status"] == "succeeded"
    result = done["result"]
    assert result["meta"] == {"organization_id": "org123", "semester": 1, "academic_year": "2024-25"}
    assert result["settings"]["quality_mode"] == "fast"
    assert len(result["variants"]) == 2
    first = result["variants"][0]
    assert set(first) >= {"rank", "hard", "soft", "feasible", "hard_violations", "soft_penalties", "assignments"}
    assert set(first["assignments"][0]) == {"course", "lecture", "day", "period", "room"}


@EMBEDDED
def test_generic_job_endpoint_runs_a_json_instance(http: Any, planted) -> None:
    instance, _ = planted
    response = http.post(
        "/v1/jobs",
        json={
            "task": "timetable",
            "input": {"instance": instance_to_dict(instance), "quality_mode": "fast", "epochs": 2},
        },
    )
    assert response.status_code == 202, response.text
    done = wait_for(
        lambda: (r := http.get(f"/v1/jobs/{response.json()['id']}", params={"wait": 10})).status_code == 200 and r,
        timeout=60,
        what="the job to finish",
    ).json()
    assert done["status"] == "succeeded" and len(done["result"]["history"]) == 2


@EMBEDDED
def test_bad_timetable_input_is_a_422_naming_the_field_and_queues_nothing(http: Any) -> None:
    before = http.get("/v1/jobs", params={"task": "timetable"}).json()["total"]
    broken = sample("small").replace("R01 ", "R01 big ", 1)
    line = next(i for i, text in enumerate(broken.splitlines(), 1) if text.startswith("R01 "))

    response = http.post("/api/generate_variants", json={**SEED_REQUEST, "ctt": broken})
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "InvalidInput" and body["field"] == "ctt"
    assert body["message"].startswith(f"line {line}: expected '<room> <capacity>' (2 fields), got 3: 'R01 big ")

    response = http.post("/v1/jobs", json={"task": "timetable", "input": {"ctt": broken}})
    assert response.status_code == 422
    assert response.json()["field"] == "input.ctt" and response.json()["message"].startswith(f"line {line}: ")

    response = http.post("/api/generate_variants", json={**SEED_REQUEST})
    assert response.status_code == 422 and response.json()["field"] == "instance"
    assert "either as 'instance' (JSON) or as 'ctt'" in response.json()["message"]

    data = instance_to_dict(generate_instance(1)[0])
    data["rooms"][0]["capacity"] = "big"
    response = http.post("/api/generate_variants", json={**SEED_REQUEST, "instance": data})
    assert response.status_code == 422 and response.json()["field"] == "instance.rooms[0].capacity"

    response = http.post(
        "/api/generate_variants", json={**SEED_REQUEST, "ctt": sample("small"), "quality_mode": "fastest"}
    )
    assert response.status_code == 422 and response.json()["field"] == "quality_mode"

    response = http.post("/v1/jobs", json={"task": "timetable", "input": {"ctt": sample("small"), "islands": 500}})
    assert response.status_code == 422 and response.json()["field"] == "input.islands"

    assert http.get("/v1/jobs", params={"task": "timetable"}).json()["total"] == before

"""Fair share with real workers on Redis and RabbitMQ: owners share workers by weight, interactive
jobs overtake batch ones, and a model's concurrency cap holds across workers (modelq.jobs.dispatch).

Two threads-pool workers with two threads each serve ``tests.use_model`` jobs (sleeps holding a
model whose load is a short sleep). Shares are read from the order the jobs started in.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from conftest import REDIS_URL, _flush_redis, _fresh_rabbitmq_vhost, start_worker, stop_process, wait_for_worker

BROKER_DB, RESULT_DB = 8, 9
TASK = "tests.use_model"
#: Threads per worker, workers.
THREADS, WORKERS = 2, 2
WEIGHTS = {"heavy": 3.0}
CAP = 1
GATE = 2.0
#: Jobs of a queue on the broker at once (the default dispatch_window).
WINDOW = 4


@pytest.fixture(scope="module", params=["redis", "rabbitmq"])
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from modelq.celery_app import create_celery_app
    from modelq.config import load_settings

    name, home = request.param, tmp_path_factory.mktemp(f"fair-{request.param}") / "home"
    # Each test's model loads in GATE seconds on first use: its jobs all wait while it loads, so the
    # order they start in is the dispatcher's, not the order they were submitted in.
    models = {
        model: {
            "loader": "modelq_test_tasks:load_sleepy",
            "keep_alive": -1,
            "options": {"load_seconds": GATE},
            **({"max_concurrency": CAP} if model == "capped" else {}),
        }
        for model in ("even", "weighted", "alone", "urgent", "capped")
    }
    env = {"MODELQ_HOME": str(home), "MODELQ_MODELS": json.dumps(models), "MODELQ_OWNER_WEIGHTS": json.dumps(WEIGHTS)}
    if name == "redis":
        _flush_redis(BROKER_DB)
        env["MODELQ_BROKER_URL"] = f"{REDIS_URL}/{BROKER_DB}"
    else:
        _flush_redis(RESULT_DB)
        env["MODELQ_BROKER_URL"] = _fresh_rabbitmq_vhost(f"fair_{uuid.uuid4().hex[:6]}")
        env["MODELQ_RESULT_BACKEND"] = f"{REDIS_URL}/{RESULT_DB}"
    settings = load_settings(
        home=home,
        broker_url=env["MODELQ_BROKER_URL"],
        result_backend=env.get("MODELQ_RESULT_BACKEND"),
        imports=["modelq_test_tasks"],
        models=models,
        owner_weights=WEIGHTS,
    )
    app = create_celery_app(settings)
    app.modelq.store  # noqa: B018 - migrate before the workers start
    workers = [
        start_worker(env, "default", f"fair{i}-{name}@%h", "--pool", "threads", "-c", str(THREADS))
        for i in range(WORKERS)
    ]
    try:
        for i in range(WORKERS):
            wait_for_worker(app, f"fair{i}-{name}@")
        yield {"name": name, "app": app}
    finally:
        for worker in workers:
            stop_process(worker)
        app.modelq.store.dispose()


def submit(
    cluster: dict[str, Any], owner: str, count: int, model: str, *, seconds: float = 0.01, priority: str | None = None
) -> list[dict[str, Any]]:
    from modelq.jobs.service import JobService

    service = JobService(cluster["app"])
    return [
        service.submit(TASK, {"model": model, "seconds": seconds}, owner=owner, priority=priority) for _ in range(count)
    ]


def finished(cluster: dict[str, Any], jobs: list[dict[str, Any]], timeout: float = 120) -> list[dict[str, Any]]:
    from modelq.jobs.service import JobService

    service = JobService(cluster["app"])
    done = [service.wait(job["id"], timeout) for job in jobs]
    assert [job["status"] for job in done] == ["succeeded"] * len(done)
    return done


def start_order(done: list[dict[str, Any]]) -> list[str]:
    """Owners of the jobs, in the order they started."""
    return [job["owner"] for job in sorted(done, key=lambda job: datetime.fromisoformat(job["started_at"]))]


def records(cluster: dict[str, Any], done: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The jobs with their owners (the record the interfaces show leaves the owner out)."""
    store = cluster["app"].modelq.store
    return [{**job, "owner": store.owner_of(job["id"])} for job in done]


def test_two_owners_with_equal_weights_share_the_workers_evenly(cluster: dict[str, Any]) -> None:
    jobs = submit(cluster, "alice", 200, "even") + submit(cluster, "bob", 200, "even")
    order = start_order(records(cluster, finished(cluster, jobs)))
    # alice's first few went to the broker before bob came; from then on both waited
    first = Counter(order[WINDOW : WINDOW + 200])
    assert abs(first["alice"] - first["bob"]) <= 20, first


def test_weights_three_to_one_give_about_three_to_one(cluster: dict[str, Any]) -> None:
    jobs = submit(cluster, "light", 200, "weighted") + submit(cluster, "heavy", 200, "weighted")
    first = Counter(start_order(records(cluster, finished(cluster, jobs)))[WINDOW : WINDOW + 200])
    assert 2.7 <= first["heavy"] / first["light"] <= 3.3, first


def test_an_owner_alone_gets_every_worker(cluster: dict[str, Any]) -> None:
    done = finished(cluster, submit(cluster, "solo", 40, "alone", seconds=0.05))
    by_worker = Counter(job["worker"].split("@")[0] for job in done)
    assert len(by_worker) == WORKERS, by_worker  # held back by nobody: both workers ran its jobs


def test_an_interactive_job_overtakes_a_queued_batch(cluster: dict[str, Any]) -> None:
    batch = submit(cluster, "alice", 100, "urgent")
    urgent = submit(cluster, "bob", 1, "urgent", priority="interactive")[0]
    assert urgent["priority"] == 9
    order = [
        job["id"]
        for job in sorted(
            finished(cluster, [*batch, urgent]), key=lambda job: datetime.fromisoformat(job["started_at"])
        )
    ]
    # ahead of it only what was on the broker when it came (a window), and what the slots took meanwhile
    assert order.index(urgent["id"]) <= WINDOW + WORKERS * THREADS, order.index(urgent["id"])


def test_a_model_cap_holds_across_two_workers(cluster: dict[str, Any]) -> None:
    done = finished(
        cluster, submit(cluster, "alice", 6, "capped", seconds=0.3) + submit(cluster, "bob", 6, "capped", seconds=0.3)
    )
    spans = sorted(
        (datetime.fromisoformat(job["started_at"]), datetime.fromisoformat(job["finished_at"])) for job in done
    )
    most = max(sum(1 for start, end in spans if start <= moment < end) for moment, _ in spans)
    assert most == CAP, spans

"""GET /metrics: Prometheus text that prometheus_client parses, with the families operators graph."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import Backend, wait_for
from modelq.testing import serving

pytestmark = pytest.mark.parametrize("backend", ["embedded", "rabbitmq"], indirect=True)


@pytest.fixture
def http(backend: Backend) -> Iterator[httpx.Client]:
    from modelq.api import create_api

    with serving(create_api(backend.settings, celery_app=backend.app)) as url:
        with httpx.Client(base_url=url, timeout=60) as client:
            yield client


def scrape(http: httpx.Client) -> dict[str, list]:
    response = http.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {family.name: family.samples for family in text_string_to_metric_families(response.text)}


def value(samples: list, name: str, **labels: str) -> float:
    return sum(s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def test_metrics_count_jobs_time_them_and_show_queue_depths(http: httpx.Client, backend: Backend) -> None:
    before = scrape(http)
    echoed = value(before.get("modelq_jobs_submitted", []), "modelq_jobs_submitted_total", task="echo")
    failed = value(
        before.get("modelq_jobs_finished", []), "modelq_jobs_finished_total", task="tests.fail", status="failed"
    )
    # given three echo jobs and one that fails
    client = backend.client
    ids = [client.submit("echo", {"i": i})["id"] for i in range(3)] + [client.submit("tests.fail", {})["id"]]
    for job_id in ids:
        client.wait(job_id, timeout=60)
    # then the counters moved by exactly that much
    after = scrape(http)
    assert value(after["modelq_jobs_submitted"], "modelq_jobs_submitted_total", task="echo") == echoed + 3
    assert (
        value(after["modelq_jobs_finished"], "modelq_jobs_finished_total", task="tests.fail", status="failed")
        == failed + 1
    )
    # and every configured queue has a depth
    assert {s.labels["queue"] for s in after["modelq_queue_depth"]} >= set(backend.settings.queues)

    # and the jobs land in the wait and run histograms once their records have settled
    def timed() -> dict | None:
        families = scrape(http)
        runs = families.get("modelq_job_run_seconds", [])
        count = value(runs, "modelq_job_run_seconds_count", task="echo", status="succeeded")
        return families if count >= 3 else None

    families = wait_for(timed, timeout=30, interval=0.5, what="echo jobs in the run-time histogram")
    waits = families["modelq_job_queue_wait_seconds"]
    assert value(waits, "modelq_job_queue_wait_seconds_count", task="echo") >= 3
    inf = value(waits, "modelq_job_queue_wait_seconds_bucket", task="echo", le="+Inf")
    assert inf == value(waits, "modelq_job_queue_wait_seconds_count", task="echo")


def test_metrics_show_jobs_per_owner_and_the_jobs_held_for_their_turn(
    http: httpx.Client, backend: Backend, tmp_path
) -> None:  # noqa: ANN001
    from modelq.ops import purge_queue

    # given jobs on "cpu", which no worker here reads: a window of them on the broker, the rest held
    window = backend.settings.dispatch_window
    for i in range(window + 2):
        backend.client.submit("tests.touch", {"path": str(tmp_path / f"t{i}")})
    try:
        families = scrape(http)
        assert value(families["modelq_held_jobs"], "modelq_held_jobs", queue="cpu") == 2
        assert value(families["modelq_owner_jobs"], "modelq_owner_jobs", owner="", status="queued") >= window + 2
    finally:
        purge_queue(backend.app, "cpu")
    assert value(scrape(http)["modelq_held_jobs"], "modelq_held_jobs", queue="cpu") == 0

"""The ``llm`` task end to end: a real ``modelq worker -Q io`` calling a real OpenAI-compatible
server on loopback (``StubLLMServer``), through the embedded broker."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from conftest import stop_process, wait_for, wait_for_worker
from llm_helpers import Reply, StubLLMServer, llm_env, start_io_worker
from modelq.errors import InvalidInput

MAX_IN_FLIGHT = 16
MAX_PROMPTS = 50
MAX_RETRIES = 3
API_KEY = "sk-test-not-secret"


@dataclass
class Cluster:
    server: StubLLMServer
    secured: StubLLMServer
    env: dict[str, str]
    app: Any

    @property
    def client(self):  # noqa: ANN201
        from modelq.client import Client

        return Client.in_process(app=self.app)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    from modelq.broker import EmbeddedRedis
    from modelq.celery_app import create_celery_app
    from modelq.config import load_settings

    server = StubLLMServer(latency=0.2).start()
    secured = StubLLMServer(api_key=API_KEY).start()
    home = tmp_path_factory.mktemp("llm-home")
    endpoints = {
        "stub": {"base_url": server.base_url, "models": ["stub-*"], "timeout": 1.0},
        "secured": {"base_url": secured.base_url, "models": ["secured-*"], "api_key_env": "STUB_API_KEY"},
    }
    limits = {
        "llm_max_in_flight": MAX_IN_FLIGHT,
        "llm_max_prompts": MAX_PROMPTS,
        "llm_max_retries": MAX_RETRIES,
        "llm_retry_backoff": 0.05,
    }
    env = {"MODELQ_HOME": str(home), "STUB_API_KEY": API_KEY, **llm_env(endpoints, **limits)}
    # The submitting side has the same settings as the worker (submit-time checks use them).
    app = create_celery_app(load_settings(home=home, llm_endpoints=endpoints, **limits), start_broker=True)
    app.modelq.store  # noqa: B018 - migrate before the worker starts
    worker = start_io_worker(env, "llm-io@%h", concurrency=4)
    try:
        wait_for_worker(app, "llm-io@")
        yield Cluster(server=server, secured=secured, env=env, app=app)
    finally:
        stop_process(worker)
        EmbeddedRedis(home).stop()
        server.stop()
        secured.stop()


@pytest.fixture(autouse=True)
def _llm_settings(_isolated_env: None, cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    # The submitting side reads the same MODELQ_LLM_* settings as the worker (the submit-time checks).
    for key, value in cluster.env.items():
        monkeypatch.setenv(key, value)


def run(cluster: Cluster, timeout: float = 60, **job_input: Any) -> dict[str, Any]:
    client = cluster.client
    return client.wait(client.submit("llm", job_input)["id"], timeout=timeout)


def test_results_come_back_in_input_order_with_text_and_usage(cluster: Cluster) -> None:
    server = cluster.server
    prompts: list[Any] = [f"order {i}" for i in range(24)]
    prompts[5] = [{"role": "system", "content": "its own system prompt"}, {"role": "user", "content": "order 5"}]
    # given early prompts that answer last
    for i in range(4):
        server.script(f"order {i}", Reply(200, hang=0.6))
    # when the job runs
    done = run(cluster, prompts=prompts, model="stub-7b", system="Answer briefly.", temperature=0.3, max_tokens=32)
    # then every result is in its prompt's place, with its text and usage
    assert done["status"] == "succeeded", done["error"]
    assert done["queue"] == "io" and done["worker"].startswith("llm-io@")
    result = done["result"]
    assert [item["text"] for item in result["results"]] == [f"stub-7b: order {i}" for i in range(24)]
    assert [item["index"] for item in result["results"]] == list(range(24))
    assert all(item["error"] is None and item["usage"]["total_tokens"] > 0 for item in result["results"])
    assert result["succeeded"] == 24 and result["failed"] == 0
    assert result["usage"]["total_tokens"] == sum(item["usage"]["total_tokens"] for item in result["results"])
    # and the server got the model, the options and the system prompt (unless a chat brought its own)
    sent = {r.prompt: r.body for r in server.requests_for("order 1") + server.requests_for("order 5")}
    assert sent["order 1"]["model"] == "stub-7b"
    assert sent["order 1"]["temperature"] == 0.3 and sent["order 1"]["max_tokens"] == 32
    assert sent["order 1"]["messages"] == [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "order 1"},
    ]
    assert sent["order 5"]["messages"][0] == {"role": "system", "content": "its own system prompt"}
    assert len(sent["order 5"]["messages"]) == 2


def test_many_calls_are_in_flight_at_once_but_never_more_than_the_cap(cluster: Cluster) -> None:
    server = cluster.server
    server.reset()
    done = run(cluster, prompts=[f"wide {i}" for i in range(3 * MAX_IN_FLIGHT)], model="stub-7b")
    assert done["status"] == "succeeded"
    assert done["result"]["succeeded"] == 3 * MAX_IN_FLIGHT
    # the server had many of this job's calls open at once, and never more than the worker's cap
    assert MAX_IN_FLIGHT // 2 <= server.peak_active <= MAX_IN_FLIGHT


def test_retries_honour_retry_after_and_failures_are_reported_per_item(cluster: Cluster) -> None:
    server = cluster.server
    server.script("retry 1", Reply(429, retry_after=0.5))
    server.script("retry 2", Reply(500), Reply(503))
    server.script("retry 3", *[Reply(500, message="the GPU fell off")] * (MAX_RETRIES + 1))
    server.script("retry 4", Reply(400, message="messages too long"))
    done = run(cluster, prompts=[f"retry {i}" for i in range(6)], model="stub-7b")

    # one failed item does not fail the job
    assert done["status"] == "succeeded"
    items = done["result"]["results"]
    assert done["result"]["succeeded"] == 4 and done["result"]["failed"] == 2
    assert [item["attempts"] for item in items] == [1, 2, 3, MAX_RETRIES + 1, 1, 1]
    assert items[1]["text"] == "stub-7b: retry 1" and items[2]["text"] == "stub-7b: retry 2"
    # 5xx is retried until the retries run out; the item says why it failed
    assert items[3]["text"] is None
    assert items[3]["error"]["type"] == "server_error" and items[3]["error"]["status"] == 500
    assert "the GPU fell off" in items[3]["error"]["message"]
    # a 400 is the request's fault: not retried
    assert items[4]["error"] == {
        "type": "client_error",
        "status": 400,
        "message": "HTTP 400 from stub: messages too long",
    }
    # the 429's retry came no sooner than its Retry-After said
    first, second = server.requests_for("retry 1")
    assert first.status == 429 and second.status == 200
    assert second.at - first.at >= 0.5


def test_all_or_nothing_fails_the_job_at_the_first_failed_prompt(cluster: Cluster) -> None:
    cluster.server.script("strict 2", *[Reply(500)] * (MAX_RETRIES + 1))
    done = run(cluster, prompts=[f"strict {i}" for i in range(5)], model="stub-7b", all_or_nothing=True)
    assert done["status"] == "failed"
    assert done["error"].startswith("LLMJobFailed: prompt 2 of 5 failed: HTTP 500")
    assert "all_or_nothing" in done["error"]


def test_a_call_that_outlives_its_timeout_is_retried(cluster: Cluster) -> None:
    # the stub endpoint allows 1 s per call; the first answer would take 3 s
    cluster.server.script("slow 0", Reply(200, hang=3.0))
    done = run(cluster, prompts=["slow 0", "slow 1"], model="stub-7b")
    assert done["status"] == "succeeded"
    first = done["result"]["results"][0]
    assert first["text"] == "stub-7b: slow 0" and first["attempts"] == 2


def test_reduce_runs_over_the_map_results(cluster: Cluster) -> None:
    done = run(
        cluster,
        prompts=["community A", "community B", "community C"],
        model="stub-7b",
        reduce="Summarise these reports:\n{results}",
        reduce_max_tokens=200,
    )
    assert done["status"] == "succeeded"
    reduced = done["result"]["reduce"]
    assert reduced["error"] is None
    assert reduced["text"] == (
        "stub-7b: Summarise these reports:\n[1] stub-7b: community A\n\n[2] stub-7b: community B\n\n"
        "[3] stub-7b: community C"
    )
    assert done["progress"]["fraction"] == 1.0
    assert done["result"]["usage"]["total_tokens"] == sum(
        item["usage"]["total_tokens"] for item in [*done["result"]["results"], reduced]
    )


def test_api_key_comes_from_the_workers_environment(cluster: Cluster) -> None:
    done = run(cluster, prompts=["hello"], model="secured-1")
    assert done["status"] == "succeeded"
    assert done["result"]["results"][0]["text"] == "secured-1: hello"
    assert cluster.secured.completions()[-1].headers["authorization"] == f"Bearer {API_KEY}"


def test_progress_is_completed_over_total(cluster: Cluster) -> None:
    client = cluster.client
    job = client.submit("llm", {"prompts": [f"step {i}" for i in range(12)], "model": "stub-7b", "max_in_flight": 2})
    seen = wait_for(
        lambda: (j := client.get(job["id"]))["status"] == "running" and 0 < j["progress"]["fraction"] < 1 and j,
        timeout=30,
        what="progress between 0 and 1",
    )
    completed, total = map(int, re.match(r"(\d+)/(\d+) calls", seen["progress"]["message"]).groups())
    assert total == 12 and seen["progress"]["fraction"] == pytest.approx(completed / 12)
    done = client.wait(job["id"], timeout=60)
    assert done["status"] == "succeeded" and done["progress"]["fraction"] == 1.0


def test_cancel_stops_new_calls_and_keeps_what_finished(cluster: Cluster) -> None:
    client, server = cluster.client, cluster.server
    prompts = [f"cancel {i}" for i in range(40)]
    job = client.submit("llm", {"prompts": prompts, "model": "stub-7b", "max_in_flight": 2})
    wait_for(lambda: client.get(job["id"])["progress"]["fraction"] >= 0.1, timeout=30, what="a few calls to finish")
    # when the job is cancelled mid-way
    assert client.cancel(job["id"])["status"] == "cancelled"
    # then the job leaves what finished, in order, the rest marked cancelled
    wait_for(lambda: client.get(job["id"])["artifacts"], timeout=30, what="the partial results")
    partial = json.loads(client.artifact(job["id"], "results.json"))
    finished = [item for item in partial["results"] if item["error"] is None]
    assert len(finished) >= 4
    assert all(item["text"] == f"stub-7b: cancel {item['index']}" for item in finished)
    assert {item["error"]["type"] for item in partial["results"] if item["error"]} == {"cancelled"}
    # and no new call went out: once a later job has run, the server saw at most the finished
    # calls and the two that were in flight
    assert run(cluster, prompts=["after cancel"], model="stub-7b")["status"] == "succeeded"
    sent = sum(len(server.requests_for(p)) for p in prompts)
    assert len(finished) <= sent <= len(finished) + 2 < len(prompts)
    assert client.get(job["id"])["status"] == "cancelled"


def test_bad_input_is_refused_with_a_422_naming_the_field(cluster: Cluster) -> None:
    from fastapi.testclient import TestClient

    from modelq.api import create_api

    before = cluster.client.list()["total"]
    with TestClient(
        create_api(cluster.app.modelq.settings, celery_app=cluster.app), base_url="http://localhost"
    ) as http:

        def refused(job_input: dict[str, Any]) -> dict[str, Any]:
            response = http.post("/v1/jobs", json={"task": "llm", "input": job_input})
            assert response.status_code == 422, response.text
            return response.json()

        too_many = refused({"prompts": ["x"] * (MAX_PROMPTS + 1), "model": "stub-7b"})
        assert too_many["field"] == "prompts" and too_many["limit"] == MAX_PROMPTS
        assert f"the limit is {MAX_PROMPTS}" in too_many["message"] and "MODELQ_LLM_MAX_PROMPTS" in too_many["message"]

        unknown = refused({"prompts": ["x"], "model": "gpt-nope"})
        assert unknown["field"] == "model" and "stub-*" in unknown["message"]

        bad_role = [{"role": "wizard", "content": "hi"}]
        assert refused({"prompts": ["x", bad_role], "model": "stub-7b"})["field"] == "prompts.1.0.role"
        assert refused({"prompts": ["x", 7], "model": "stub-7b"})["field"] == "prompts.1"
        assert refused({"prompts": [], "model": "stub-7b"})["field"] == "prompts"
        assert refused({"prompts": ["x"], "model": "stub-7b", "temperature": 5})["field"] == "temperature"
        assert refused({"prompts": ["x"], "model": "stub-7b", "max_in_flight": 10_000})["field"] == "max_in_flight"
        assert refused({"prompts": ["x"]})["field"] == "input"
    # the in-process client refuses the same way, and nothing was recorded
    with pytest.raises(InvalidInput, match="the limit is 50") as refused_locally:
        cluster.client.submit("llm", {"prompts": ["x"] * (MAX_PROMPTS + 1), "model": "stub-7b"})
    assert refused_locally.value.field == "prompts"
    assert cluster.client.list()["total"] == before


def test_a_missing_api_key_variable_fails_the_job_naming_it(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    from modelq.config import load_settings
    from modelq.errors import ConfigError
    from modelq.workloads.llm.job import run_job

    # the task's own code, in this process, where STUB_API_KEY is not set
    monkeypatch.delenv("STUB_API_KEY")
    with pytest.raises(ConfigError, match="environment variable STUB_API_KEY is not set") as failed:
        run_job({"prompts": ["hello"], "model": "secured-1"}, load_settings())
    assert failed.value.key == "llm_endpoints.secured.api_key_env"

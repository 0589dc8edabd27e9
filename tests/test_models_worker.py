"""Models in a real worker: load once per process, affinity under a budget of one, batching, visibility."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import _backend_env, child_env, start_worker, stop_process, wait_for, wait_for_worker
from modelq_test_models import make_linear

LOADER = "modelq_test_models:load_linear"


@pytest.fixture(scope="module", params=["embedded", "rabbitmq"])
def model_worker(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A threads-pool worker (like the gpu queue's) with two models and room for one."""
    from modelq.broker import EmbeddedRedis
    from modelq.celery_app import create_celery_app
    from modelq.config import load_settings

    root = tmp_path_factory.mktemp("models-worker")
    models = {
        name: {"loader": LOADER, "source": str(make_linear(root / f"{name}.pt", 2)), "options": {"slow": 0.2}}
        for name in ("m-a", "m-b")
    }
    env = {
        "MODELQ_HOME": str(root / "home"),
        "MODELQ_MODELS": json.dumps(models),
        "MODELQ_CPU_MAX_MODELS": "1",
        "MODELQ_BATCH_MAX_WAIT_MS": "50",
        "MODELQ_AFFINITY_MAX_WAIT": "30",
    }
    if request.param == "rabbitmq":
        env.update(_backend_env("rabbitmq", root / "home", tag="models"))
    settings = load_settings(
        home=root / "home",
        models=models,
        cpu_max_models=1,
        imports=["modelq_test_tasks"],
        broker_url=env.get("MODELQ_BROKER_URL"),
        result_backend=env.get("MODELQ_RESULT_BACKEND"),
    )
    app = create_celery_app(settings, start_broker=True)
    app.modelq.store  # noqa: B018
    worker = start_worker(env, "default", "models@%h", "--pool", "threads", "-c", "4")
    try:
        wait_for_worker(app, "models@")
        yield {"app": app, "env": env, "root": root}
    finally:
        stop_process(worker)
        EmbeddedRedis(root / "home").stop()


def _client(model_worker: dict):  # noqa: ANN202
    from modelq.client import Client

    return Client.in_process(app=model_worker["app"])


def _loads(app) -> dict[str, int]:  # noqa: ANN001
    totals: dict[str, int] = {}
    for row in app.modelq.store.residency():
        totals[row["model"]] = totals.get(row["model"], 0) + row["loads"]
    return totals


def test_jobs_for_a_model_go_to_its_queue_and_load_it_once(model_worker: dict) -> None:
    client = _client(model_worker)
    first = client.submit("tests.infer", {"model": "m-a"})
    assert first["queue"] == "default.model.m-a"
    results = [client.result(first["id"], timeout=60)] + [
        client.run("tests.infer", {"model": "m-a"}, timeout=60) for _ in range(4)
    ]
    assert {r["model"] for r in results} == {"m-a"} and len({r["sum"] for r in results}) == 1

    def resident_rows() -> list[dict]:
        rows = [w for w in _models(model_worker)["m-a"]["workers"] if w["resident"]]
        return rows if rows and rows[0]["hits"] >= 4 else []  # hit counts are flushed every couple of seconds

    (row,) = wait_for(resident_rows, timeout=30, what="m-a to be reported resident with its hits")
    assert row["loads"] == 1 and row["bytes"] > 0 and row["worker"].startswith("models@")


def test_a_mixed_stream_with_a_budget_of_one_does_not_thrash(model_worker: dict) -> None:
    client = _client(model_worker)
    app = model_worker["app"]
    before = _loads(app)
    # given 64 jobs alternating between two models, and room for one model
    jobs = [client.submit("tests.infer", {"model": "m-a" if i % 2 == 0 else "m-b"}) for i in range(64)]
    done = [client.wait(job["id"], timeout=120) for job in jobs]
    # then every job got its own model's answer
    assert all(d["status"] == "succeeded" for d in done)
    assert [d["result"]["model"] for d in done] == ["m-a" if i % 2 == 0 else "m-b" for i in range(64)]
    # and the worker switched models a handful of times, not 64
    after = wait_for(
        lambda: (a := _loads(app)) and sum(a.values()) > sum(before.values()) and a,
        timeout=30,
        what="loads to be reported",
    )
    switches = sum(after.values()) - sum(before.values())
    assert 1 <= switches <= 4, f"{switches} loads for 64 alternating jobs"


def test_small_requests_share_a_forward_pass_and_keep_their_own_results(model_worker: dict) -> None:
    client = _client(model_worker)
    rows = [[[float(j + i)] * 256 for i in range(2)] for j in range(16)]
    jobs = [client.submit("tests.batched", {"rows": r}) for r in rows]
    done = [client.wait(job["id"], timeout=60) for job in jobs]
    assert all(d["status"] == "succeeded" for d in done)
    # each job gets one output per input row, in order: row i of job j is (j + i) * ones, so its
    # output sum is (j + i) times the model's constant c
    c = done[0]["result"][1]["sum"]  # job 0, row 1: value 1
    for j, d in enumerate(done):
        assert [item["sum"] for item in d["result"]] == pytest.approx([c * j, c * (j + 1)], abs=0.05)
    assert len({d["id"] for d in done}) == 16
    # and some of them ran together in one batch
    assert max(item["batch"] for d in done for item in d["result"]) > 2


def test_inspect_models_shows_residency(model_worker: dict, tmp_path: Path) -> None:
    _client(model_worker).run("tests.infer", {"model": "m-b"}, timeout=60)
    result = subprocess.run(
        [sys.executable, "-m", "modelq", "inspect", "models", "--json"],
        capture_output=True,
        text=True,
        env=child_env(**model_worker["env"]),
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    listing = {m["id"]: m for m in json.loads(result.stdout)["data"]}
    assert listing["m-b"]["declared"]["loader"] == LOADER
    assert any(w["resident"] and w["loads"] >= 1 for w in listing["m-b"]["workers"])


def _models(model_worker: dict) -> dict:
    from modelq.models.listing import model_listing

    return {m["id"]: m for m in model_listing(model_worker["app"])["data"]}


def test_metrics_report_model_loads_and_resident_bytes(model_worker: dict) -> None:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from modelq.metrics import ModelqCollector

    _client(model_worker).run("tests.infer", {"model": "m-a"}, timeout=60)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ModelqCollector(model_worker["app"]))

    def m_a_resident() -> dict | None:
        text = generate_latest(registry).decode()
        families = {f.name: f.samples for f in text_string_to_metric_families(text)}
        rows = [s for s in families["modelq_model_resident_bytes"] if s.labels["model"] == "m-a" and s.value > 0]
        return families if rows else None

    families = wait_for(m_a_resident, timeout=30, what="m-a resident in /metrics")
    loads = [s for s in families["modelq_model_loads"] if s.labels["model"] == "m-a"]
    assert loads and all(s.name == "modelq_model_loads_total" for s in loads) and sum(s.value for s in loads) >= 1
    assert {s.labels["worker"] for s in loads} == {
        r["worker"] for r in model_worker["app"].modelq.store.residency() if r["model"] == "m-a"
    }
    assert "modelq_model_evictions" in families

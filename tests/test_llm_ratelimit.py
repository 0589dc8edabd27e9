"""The ``llm`` rate limit is one budget for the whole cluster: two workers share it through the
broker's Redis, and without Redis through the job store's database (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from conftest import REDIS_URL, stop_process, wait_for_worker
from llm_helpers import StubLLMServer, busiest_window, llm_env, start_io_worker
from modelq.workloads.llm.ratelimit import DatabaseBuckets, Limits, RateLimiter, RedisBuckets

REDIS_DB = 12
RATE = 8.0  # requests per second; the bucket holds one second's worth
#: Arrival times at the server lag the limiter's grants by a varying few ms (more on a busy machine).
SLACK = 0.15


def within_limit(times: list[float], rate: float, capacity: float) -> bool:
    """Over every window of w seconds, at most capacity + rate * w requests."""
    return all(busiest_window(times, w) <= capacity + rate * (w + SLACK) for w in (0.25, 0.5, 1.0, 2.0))


def test_two_workers_share_one_requests_per_second_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import redis

    from modelq.celery_app import create_celery_app
    from modelq.config import load_settings

    redis.Redis.from_url(f"{REDIS_URL}/{REDIS_DB}").flushdb()
    server = StubLLMServer(latency=0.05).start()
    env = {
        "MODELQ_HOME": str(tmp_path / "home"),
        "MODELQ_BROKER_URL": f"{REDIS_URL}/{REDIS_DB}",
        # one job at a time per worker, none held in reserve: the two jobs land on different workers
        "MODELQ_QUEUES": json.dumps(
            {"default": {"pool": "prefork"}, "io": {"pool": "threads", "concurrency": 1, "prefetch_multiplier": 1}}
        ),
        **llm_env({"shared": {"base_url": server.base_url, "requests_per_second": RATE}}),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    app = create_celery_app(load_settings())
    app.modelq.store  # noqa: B018 - migrate before the workers start
    workers = [start_io_worker(env, f"limited-{n}@%h", concurrency=1) for n in (1, 2)]
    try:
        for n in (1, 2):
            wait_for_worker(app, f"limited-{n}@")
        from modelq.client import Client

        client = Client.in_process(app=app)
        # given two jobs of 16 prompts each, which alone would go out all at once
        jobs = [
            client.submit("llm", {"prompts": [f"job {j} prompt {i}" for i in range(16)], "model": "any"})
            for j in (1, 2)
        ]
        done = [client.wait(job["id"], timeout=60) for job in jobs]
    finally:
        for worker in workers:
            stop_process(worker)
        server.stop()
    # then both succeeded, each on its own worker
    assert [job["status"] for job in done] == ["succeeded", "succeeded"]
    assert {job["worker"].split("@")[0] for job in done} == {"limited-1", "limited-2"}
    # and together the server never saw more than the one budget allows
    times = [r.at for r in server.completions()]
    assert len(times) == 32
    assert within_limit(times, RATE, capacity=RATE)
    # while each worker alone would have used half of it: both really were sending at the same time
    per_job = [[r.at for r in server.completions() if r.prompt.startswith(f"job {j} ")] for j in (1, 2)]
    assert min(per_job[1]) < max(per_job[0]) and min(per_job[0]) < max(per_job[1])


def _grants(limiters: list[RateLimiter], per_limiter: int, tokens: int = 1) -> list[float]:
    """Acquire from every limiter at once, each in its own thread (as separate workers would)."""
    times: list[float] = []
    lock = threading.Lock()

    def take(limiter: RateLimiter) -> None:
        for _ in range(per_limiter):
            assert limiter.acquire(tokens)
            with lock:
                times.append(time.monotonic())

    threads = [threading.Thread(target=take, args=(limiter,)) for limiter in limiters]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return times


@pytest.fixture(params=["redis", "sqlite", "postgresql"])
def two_stores(request: pytest.FixtureRequest, tmp_path: Path):  # noqa: ANN201
    """Two independent bucket stores over the same backing server, as two worker processes have."""
    from modelq.jobs.store import JobStore

    if request.param == "redis":
        import redis

        redis.Redis.from_url(f"{REDIS_URL}/{REDIS_DB}").flushdb()
        yield [RedisBuckets(f"{REDIS_URL}/{REDIS_DB}?visibility_timeout=3600") for _ in range(2)]
        return
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'jobs.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    stores = [JobStore(url) for _ in range(2)]
    stores[0].migrate()  # the buckets table is the job store's (revision 0004)
    try:
        buckets = [DatabaseBuckets(store.engine) for store in stores]
        with stores[0].engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM modelq_llm_rate_buckets")
        yield buckets
    finally:
        for store in stores:
            store.dispose()


def test_requests_per_second_hold_across_limiters(two_stores: list) -> None:
    limits = Limits.for_endpoint(_endpoint(requests_per_second=20))
    limiters = [RateLimiter(store, "modelq:test:rps", limits) for store in two_stores]
    times = _grants(limiters, per_limiter=15)
    assert len(times) == 30
    assert within_limit(times, 20.0, capacity=20.0)


def test_tokens_per_minute_wait_for_the_refill_and_settle_to_real_usage(two_stores: list) -> None:
    first, second = two_stores
    limits = Limits.for_endpoint(_endpoint(tokens_per_minute=600))  # 10 tokens a second, 600 at most
    key = "modelq:test:tpm"
    # a fresh budget holds a minute's worth
    assert first.take(key, limits, 0.0, 500.0) == 0
    # a call that needs more than is left waits until the bucket refilled enough: ~(200 - 100) / 10 s
    wait = second.take(key, limits, 0.0, 200.0)
    assert 9.0 < wait <= 10.0
    # the first call really used 300 tokens fewer than estimated: they go back, and the second fits
    RateLimiter(first, key, limits).settle(estimated=500, actual=200)
    assert second.take(key, limits, 0.0, 200.0) == 0


def _endpoint(**limits: float):  # noqa: ANN202
    from modelq.config import LLMEndpoint

    return LLMEndpoint(base_url="http://127.0.0.1:9/v1", **limits)

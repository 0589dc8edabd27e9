"""Model scheduling with real workers on a real broker: overload, several workers, the consumer.

Models load in ``load_seconds`` (a sleep standing in for reading weights) and jobs are sleeps, so
the 2 cores are not the bottleneck; every worker holds one model at a time.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from conftest import REDIS_BROKER_DB, REDIS_URL, child_env, stop_process, wait_for, wait_for_worker
from modelq.testing import worker_command

LOAD_SECONDS = 0.5
MODELS = ("m0", "m1", "m2")


class Cluster:
    def __init__(self, root: Path, env: dict[str, str]) -> None:
        from modelq.celery_app import create_celery_app
        from modelq.config import load_settings

        self.root, self.env, self.procs = root, env, []
        settings = load_settings(
            home=root / "home",
            imports=["modelq_test_tasks"],
            models=json.loads(env["MODELQ_MODELS"]),
            broker_url=env.get("MODELQ_BROKER_URL"),
        )
        self.app = create_celery_app(settings, start_broker=True)
        self.app.modelq.store  # noqa: B018 - migrate before the workers start

    def start(self, count: int, **extra: str) -> list[str]:
        names = []
        for _ in range(count):
            name = f"w{len(self.procs)}@placement"
            log = open(self.root / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
            self.procs.append(
                subprocess.Popen(
                    worker_command("default", name, pool="threads", concurrency=1),
                    env=child_env(**self.env, **extra),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            names.append(name)
        for name in names:
            wait_for_worker(self.app, name)
        return names

    def client(self):  # noqa: ANN201
        from modelq.client import Client

        return Client.in_process(app=self.app)

    def burst(self, models: list[str], seconds: float) -> list[dict]:
        client = self.client()
        jobs = [client.submit("tests.use_model", {"model": m, "seconds": seconds}) for m in models]
        done = [client.wait(job["id"], timeout=180) for job in jobs]
        assert [d["status"] for d in done] == ["succeeded"] * len(done)
        assert [d["result"]["model"] for d in done] == models
        return done

    def loads(self) -> int:
        return sum(row["loads"] for row in self.app.modelq.store.residency())

    def loads_by_worker(self) -> dict[str, dict[str, int]]:
        """Per worker, how many times it loaded each model (for a failure's message)."""
        by_worker: dict[str, dict[str, int]] = {}
        for row in self.app.modelq.store.residency():
            by_worker.setdefault(row["worker"], {})[row["model"]] = row["loads"]
        return by_worker

    def stop(self) -> None:
        for proc in self.procs:
            stop_process(proc)
        from modelq.broker import EmbeddedRedis

        EmbeddedRedis(self.root / "home").stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    models = {
        name: {"loader": "modelq_test_tasks:load_sleepy", "keep_alive": -1, "options": {"load_seconds": LOAD_SECONDS}}
        for name in MODELS
    }
    env = {"MODELQ_HOME": str(tmp_path / "home"), "MODELQ_MODELS": json.dumps(models), "MODELQ_CPU_MAX_MODELS": "1"}
    cluster = Cluster(tmp_path, env)
    try:
        yield cluster
    finally:
        cluster.stop()


def skewed(n: int) -> list[str]:
    """n jobs, 60/30/10 % over the three models, interleaved as users would send them."""
    return ["m0" if i % 10 < 6 else "m1" if i % 10 < 9 else "m2" for i in range(n)]


def test_one_worker_where_every_job_is_overdue_switches_only_after_paying_for_it(cluster: Cluster) -> None:
    # given one worker, three models whose load times it has measured (until then it takes a load to
    # cost 5 s, and would rather drain each backlog), and a wait limit so short that every job is
    # overdue at once
    cluster.start(1, MODELQ_AFFINITY_MAX_WAIT="0.2", MODELQ_AFFINITY_SWITCH_FACTOR="4")
    cluster.burst(list(MODELS), 0.05)
    before = wait_for(lambda: cluster.loads() >= 3 and cluster.loads(), what="the loads to be reported")
    # when a burst of 100 jobs (5 s of work) arrives
    done = cluster.burst(skewed(100), 0.05)
    # then the worker left a model with a backlog only after 4 loads' worth of serving it:
    # at most 3 + 5 s / (4 x 0.5 s) loads, where following the oldest job would load ~100 times
    loads = cluster.loads() - before
    assert loads <= 3 + 2, f"{loads} loads"
    # and each model's first job started within the documented bound:
    # max_wait + (M - 1) x ((k + 1) x L + J) + L
    bound = 0.2 + 2 * (5 * LOAD_SECONDS + 0.05) + LOAD_SECONDS
    created = min(datetime.fromisoformat(d["created_at"]) for d in done)
    for model in MODELS:
        first = min(datetime.fromisoformat(d["started_at"]) for d in done if d["result"]["model"] == model)
        assert (first - created).total_seconds() <= bound + 1.0, model  # 1 s for the tick and the store


@pytest.mark.parametrize("workers", [2, 4])
def test_workers_spread_the_hot_model_and_keep_the_cold_one_on_one(cluster: Cluster, workers: int) -> None:
    cluster.start(workers)
    # when a skewed burst arrives (10 s of work for the hot model)
    done = cluster.burst(skewed(200), 0.1)
    served_by = {m: Counter(d["worker"] for d in done if d["result"]["model"] == m) for m in MODELS}
    # then the hot model ran on several workers, the cold one on one
    assert len(served_by["m0"]) >= 2, served_by
    assert len(served_by["m2"]) == 1, served_by
    # and every worker loaded few models: at most M + W loads in all
    loads = wait_for(lambda: cluster.loads() >= 3 and cluster.loads(), what="the loads to be reported")
    assert loads <= len(MODELS) + workers, f"{loads} loads: {cluster.loads_by_worker()}, served {served_by}"


def test_the_consumer_follows_the_plan_after_a_change_it_did_not_make(cluster: Cluster) -> None:
    (name,) = cluster.start(1)
    broker_queue = cluster.app.modelq.settings.broker_queue("default.model.m0")

    def reads_m0() -> bool:
        replies = cluster.app.control.inspect(destination=[name], timeout=1.0).active_queues() or {}
        return any(q["name"] == broker_queue for q in replies.get(name, []))

    # given a worker that served m0 and holds it: idle, it reads m0's queue
    assert cluster.client().run("tests.use_model", {"model": "m0"}, timeout=60) == {"model": "m0"}
    wait_for(reads_m0, timeout=30, what="the idle worker to read m0's queue")
    # when someone else cancels the consumer of m0's queue
    cluster.app.control.cancel_consumer(broker_queue, destination=[name], reply=True, timeout=2.0)
    # then the worker reads it again on its own, and m0's jobs run
    wait_for(reads_m0, timeout=30, what="the worker to read m0's queue again")
    assert cluster.client().run("tests.use_model", {"model": "m0"}, timeout=60) == {"model": "m0"}


def test_a_queue_the_worker_starts_to_read_does_not_wait_for_its_blocked_read(tmp_path: Path) -> None:
    """kombu reads Redis with one BRPOP over the queues it read when it sent it; a queue added meanwhile
    is read only once that read ends. The controller ends it (CLIENT UNBLOCK on the connection named for
    this process), so a model the worker takes on starts now, not after the read times out."""
    import threading
    import uuid

    import redis

    from modelq.celery_app import create_celery_app
    from modelq.config import load_settings
    from modelq.models.affinity import AffinityController

    app = create_celery_app(load_settings(home=tmp_path, broker_url=f"{REDIS_URL}/{REDIS_BROKER_DB}"))
    name = app.conf.broker_transport_options["client_name"]
    # given the consumer's read, blocked with no timeout (the worker's own names it: no other connection)
    blocked = redis.Redis.from_url(f"{REDIS_URL}/{REDIS_BROKER_DB}", client_name=name)
    other = redis.Redis.from_url(f"{REDIS_URL}/{REDIS_BROKER_DB}", client_name=f"{name}-other")
    got: dict[str, object] = {}
    readers = [
        threading.Thread(target=lambda: got.update(mine=blocked.brpop([f"nothing-{uuid.uuid4()}"], timeout=0))),
        threading.Thread(target=lambda: got.update(other=other.brpop([f"nothing-{uuid.uuid4()}"], timeout=5))),
    ]
    for reader in readers:
        reader.daemon = True
        reader.start()
    watcher = redis.Redis.from_url(REDIS_URL)
    wait_for(
        lambda: (
            {c["name"] for c in watcher.client_list(_type="normal") if c["cmd"] == "brpop"} >= {name, f"{name}-other"}
        ),
        timeout=10,
        what="both reads to block",
    )
    try:
        # when the controller wakes its consumer
        controller = AffinityController(app, None, "w@h", ["default"], 1)
        controller._wake()
        # then its read ends, as if it had timed out, and nobody else's does
        readers[0].join(timeout=10)
        assert not readers[0].is_alive(), "the consumer's blocked read was not cut short"
        assert got["mine"] is None
        assert readers[1].is_alive() and "other" not in got
        # and its next read (on the same connection, found now without listing every client) ends too
        again = threading.Thread(target=lambda: got.update(again=blocked.brpop([f"nothing-{uuid.uuid4()}"], timeout=0)))
        again.daemon = True
        again.start()
        readers.append(again)
        wait_for(
            lambda: any(c["name"] == name and c["cmd"] == "brpop" and c["flags"] == "b" for c in watcher.client_list()),
            timeout=10,
            what="the second read to block",
        )
        controller._wake()
        again.join(timeout=10)
        assert not again.is_alive(), "the consumer's second blocked read was not cut short"
        assert got["again"] is None
    finally:
        for client in watcher.client_list(_type="normal"):
            if client["name"] in (name, f"{name}-other"):
                watcher.client_unblock(client["id"])
        for reader in readers:
            reader.join(timeout=10)


def test_jobs_that_wait_beside_an_idle_worker_are_reported_as_stranded(cluster: Cluster) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from modelq.metrics import ModelqCollector

    (name,) = cluster.start(1)
    # given a job record whose message the broker lost: queued, yet in no queue
    cluster.app.modelq.store.create(
        id="lost-message-job",
        task="tests.use_model",
        input={"model": "m1"},
        queue="default.model.m1",
        priority=None,
        owner="",
        idempotency_key=None,
    )
    # then the idle worker that can serve it says so in its log (after 10 s idle beside it)
    log = cluster.root / f"{name}.log"
    wait_for(
        lambda: "in default.model.m1 while this worker" in log.read_text(), timeout=60, what="the stranded-jobs warning"
    )
    # and /metrics counts it, for as long as the job waits (not for one tick: a scrape comes every few seconds)
    registry = CollectorRegistry()
    registry.register(ModelqCollector(cluster.app))
    assert 'modelq_stranded_jobs{queue="default.model.m1"} 1.0' in generate_latest(registry).decode()
    store = cluster.app.modelq.store
    since = datetime.now(timezone.utc)
    wait_for(
        lambda: any(row["worker"] == name for row in store.consumers(since)),
        timeout=30,
        what="the worker to publish its consumer rows again",
    )
    assert 'modelq_stranded_jobs{queue="default.model.m1"} 1.0' in generate_latest(registry).decode()
    # and the worker, reading that queue now, runs the model's next job at once
    assert cluster.client().run("tests.use_model", {"model": "m1"}, timeout=60) == {"model": "m1"}


def test_a_worker_that_shuts_down_stops_its_threads_and_leaves_nothing_published(cluster: Cluster) -> None:
    (name,) = cluster.start(1)
    store = cluster.app.modelq.store
    # given a worker that holds a model and publishes what its consumer reads
    assert cluster.client().run("tests.use_model", {"model": "m0"}, timeout=60) == {"model": "m0"}
    wait_for(
        lambda: any(row["worker"] == name and row["resident"] for row in store.residency()),
        timeout=30,
        what="the worker's residency row",
    )
    assert any(row["worker"] == name for row in store.consumers(datetime.fromtimestamp(0).astimezone()))
    # when it is asked to stop (SIGTERM, as systemd and docker do)
    proc = cluster.procs[-1]
    proc.terminate()
    assert proc.wait(timeout=30) == 0  # every thread it started stopped with it
    # then no other worker or `modelq inspect models` sees a ghost of it
    assert not [row for row in store.residency() if row["worker"] == name]
    assert not [row for row in store.consumers(datetime.fromtimestamp(0).astimezone()) if row["worker"] == name]

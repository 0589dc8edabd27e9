"""The reconciler: jobs whose messages the broker lost are published again and run once; jobs
waiting in a queue nobody reads are reported (log, /metrics, modelq status).

Real workers on the embedded Redis, the system Redis and RabbitMQ. A watcher worker reads only
the ``io`` queue (the reconciler runs in it); ``echo`` jobs go to ``default``, which nobody reads
until the test starts a worker for it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import (
    REDIS_URL,
    _flush_redis,
    _fresh_rabbitmq_vhost,
    child_env,
    start_worker,
    stop_process,
    wait_for,
    wait_for_worker,
)

BROKER_DB, RESULT_DB = 10, 11
JOBS = 30
WINDOW = 1000


@pytest.fixture(params=["embedded", "redis", "rabbitmq"])
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    from modelq.broker import EmbeddedRedis
    from modelq.celery_app import create_celery_app
    from modelq.config import load_settings

    name, home = request.param, tmp_path / "home"
    # Every message on the broker at once (no fair-share window) unless a test says otherwise: most
    # tests here count what the broker lost.
    marker = request.node.get_closest_marker("dispatch_window")
    window = marker.args[0] if marker else WINDOW
    env = {
        "MODELQ_HOME": str(home),
        "MODELQ_RECONCILE_GRACE": "2",
        "MODELQ_RECONCILE_INTERVAL": "0.5",
        "MODELQ_DISPATCH_WINDOW": str(window),
    }
    if name == "redis":
        _flush_redis(BROKER_DB)
        env["MODELQ_BROKER_URL"] = f"{REDIS_URL}/{BROKER_DB}"
    elif name == "rabbitmq":
        _flush_redis(RESULT_DB)
        env["MODELQ_BROKER_URL"] = _fresh_rabbitmq_vhost(f"reconcile_{uuid.uuid4().hex[:6]}")  # one per test
        env["MODELQ_RESULT_BACKEND"] = f"{REDIS_URL}/{RESULT_DB}"
    settings = load_settings(
        home=home,
        broker_url=env.get("MODELQ_BROKER_URL"),
        imports=["modelq_test_tasks"],
        result_backend=env.get("MODELQ_RESULT_BACKEND"),
        reconcile_grace=2,
        reconcile_interval=0.5,
        dispatch_window=window,
    )
    app = create_celery_app(settings, start_broker=True)
    app.modelq.store  # noqa: B018 - migrate before the workers start
    # a prefork pool: its parent reconciles while it forks its pool processes (see modelq.jobs.fork_guard)
    workers = [start_worker(env, "io", f"watch-{name}@%h", "--pool", "prefork")]
    try:
        wait_for_worker(app, f"watch-{name}@")
        yield {"name": name, "app": app, "env": env, "workers": workers}
    finally:
        for worker in workers:
            stop_process(worker)
        app.modelq.store.dispose()
        if settings.uses_embedded_broker:
            EmbeddedRedis(home).stop()


def _depth(app: Any) -> int:
    from modelq.ops import queue_depths

    return queue_depths(app, ["default"])["default"] or 0


def _lose_everything(cluster: dict[str, Any]) -> None:
    """FLUSHDB of the broker's database (Redis), or a purge of the queue behind modelq's back (RabbitMQ)."""
    app = cluster["app"]
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        if cluster["name"] == "rabbitmq":
            channel.queue_purge("default")
        else:
            channel.client.flushdb()


def test_queued_jobs_survive_a_broker_that_lost_them_and_each_runs_once(cluster: dict[str, Any]) -> None:
    from modelq.client import Client

    app = cluster["app"]
    client = Client.in_process(app=app)
    ids = [client.submit("echo", {"n": n})["id"] for n in range(JOBS)]
    wait_for(lambda: _depth(app) == JOBS, timeout=30, what="the messages to be queued")
    _lose_everything(cluster)
    assert _depth(app) == 0
    # The reconciler publishes them again; nobody reads "default" yet, so it reports them stranded.
    wait_for(
        lambda: _depth(app) == JOBS,
        timeout=60,
        what=f"the lost jobs to be published again ({_depth(app)} messages now)",
    )
    # (a pass may have republished the jobs in two steps, as they passed the grace: wait for the whole)
    reports = wait_for(
        lambda: [r for r in app.modelq.store.queue_reports(_long_ago()) if r["stranded"] and r["messages"] == JOBS],
        timeout=60,
        what="the stranded report",
    )
    assert reports == [
        {**reports[0], "queue": "default", "waiting": JOBS, "messages": JOBS, "stranded": JOBS, "readers": ""}
    ]
    status = subprocess.run(
        [sys.executable, "-m", "modelq", "status", "--json"],
        env=child_env(**cluster["env"]),
        capture_output=True,
        text=True,
        timeout=120,
    )
    listed = {row["queue"]: row for row in json.loads(status.stdout)["queue_details"]}
    assert listed["default"]["waiting"] == JOBS and listed["default"]["stranded"] == JOBS, listed
    # A worker for the queue: every job runs, once.
    cluster["workers"].append(start_worker(cluster["env"], "default", f"serve-{cluster['name']}@%h"))
    done = [client.wait(job_id, timeout=90) for job_id in ids]
    assert [job["status"] for job in done] == ["succeeded"] * JOBS
    assert [job["result"] for job in done] == [{"n": n} for n in range(JOBS)]
    assert {job["attempts"] for job in done} == {1} and {job["republished"] for job in done} == {1}


@pytest.mark.dispatch_window(4)
def test_held_jobs_and_the_released_ones_a_broker_lost_all_run_once(cluster: dict[str, Any]) -> None:
    """Fair share holds most of a burst in the job store: a broker that loses the few it has loses nothing."""
    from modelq.client import Client

    app = cluster["app"]
    client = Client.in_process(app=app)
    ids = [client.submit("echo", {"n": n})["id"] for n in range(JOBS)]
    assert app.modelq.store.held_counts() == {"default": JOBS - 4}
    wait_for(lambda: _depth(app) == 4, timeout=30, what="the released messages to be queued")
    _lose_everything(cluster)
    assert _depth(app) == 0
    # the reconciler republishes the lost ones; the held ones wait their turn
    wait_for(lambda: _depth(app) == 4, timeout=60, what=f"the lost jobs to be published again ({_depth(app)} now)")
    assert app.modelq.store.held_counts() == {"default": JOBS - 4}
    cluster["workers"].append(start_worker(cluster["env"], "default", f"serve-{cluster['name']}@%h"))
    done = [client.wait(job_id, timeout=90) for job_id in ids]
    assert [job["result"] for job in done] == [{"n": n} for n in range(JOBS)]
    assert {job["attempts"] for job in done} == {1}
    assert sorted(job["republished"] for job in done) == [0] * (JOBS - 4) + [1] * 4
    assert app.modelq.store.held_counts() == {}


def test_a_message_taken_off_its_queue_is_published_again(cluster: dict[str, Any]) -> None:
    """The BRPOP window: a client takes a message and dies before anyone records it."""
    from modelq.client import Client

    app = cluster["app"]
    client = Client.in_process(app=app)
    ids = [client.submit("echo", {"n": n})["id"] for n in range(5)]
    wait_for(lambda: _depth(app) == 5, timeout=30, what="the messages to be queued")
    with app.connection_for_write() as conn:
        if cluster["name"] == "rabbitmq":
            taken = conn.default_channel.basic_get("default", no_ack=True)
            assert taken is not None
        else:
            assert conn.default_channel.client.rpop("default") is not None  # kombu pushes left, pops right
    assert _depth(app) == 4
    cluster["workers"].append(start_worker(cluster["env"], "default", f"serve-{cluster['name']}@%h"))
    done = [client.wait(job_id, timeout=90) for job_id in ids]
    assert [job["status"] for job in done] == ["succeeded"] * 5
    assert sorted(job["republished"] for job in done) == [0, 0, 0, 0, 1]
    assert {job["attempts"] for job in done} == {1}


def _long_ago():  # noqa: ANN202
    from datetime import datetime, timezone

    return datetime(2000, 1, 1, tzinfo=timezone.utc)


@pytest.mark.parametrize("cluster", ["embedded"], indirect=True)
def test_a_republished_message_never_starts_a_second_run(cluster: dict[str, Any]) -> None:
    """A message thought lost that turns up: the republished copy starts its job only from queued."""
    from modelq.client import Client
    from modelq.jobs.service import publish

    app = cluster["app"]
    cluster["workers"].append(start_worker(cluster["env"], "default", "serve-twice@%h"))  # prefork, 2 processes
    wait_for_worker(app, "serve-twice@")
    client = Client.in_process(app=app)
    job = client.submit("sleep", {"seconds": 3, "steps": 30})
    wait_for(lambda: client.get(job["id"])["status"] == "running", timeout=60, what="the job to start")
    publish(app, "sleep", job["id"], {"seconds": 3, "steps": 30}, "default", None, generation=1)
    done = client.wait(job["id"], timeout=60)
    assert done["status"] == "succeeded" and done["attempts"] == 1


@pytest.mark.parametrize("cluster", ["embedded"], indirect=True)
def test_the_original_message_coming_back_after_a_republish_never_restarts_the_job(cluster: dict[str, Any]) -> None:
    """The reconciler took a message for lost (a worker held it unseen, a broker restarted) and published
    the job again; the original comes back redelivered while the republished copy runs: it is dropped."""
    from modelq.client import Client

    app = cluster["app"]
    client = Client.in_process(app=app)
    job = client.submit("sleep", {"seconds": 4, "steps": 40})
    wait_for(lambda: _depth(app) == 1, timeout=30, what="the message to be queued")
    with app.connection_for_write() as conn:
        original = json.loads(conn.default_channel.client.rpop("default"))
    wait_for(
        lambda: client.get(job["id"])["republished"] == 1 and _depth(app) == 1,
        timeout=60,
        what="the reconciler to publish the job again",
    )
    cluster["workers"].append(start_worker(cluster["env"], "default", "serve-again@%h"))  # prefork, 2 processes
    wait_for(lambda: client.get(job["id"])["status"] == "running", timeout=60, what="the job to start")
    original["headers"]["redelivered"] = True  # as kombu restores an unacknowledged message
    original["properties"]["delivery_info"]["redelivered"] = True
    with app.connection_for_write() as conn:
        conn.default_channel.client.lpush("default", json.dumps(original))
    wait_for(lambda: _depth(app) == 0, timeout=30, what="a worker to take the original message")
    done = client.wait(job["id"], timeout=60)
    assert done["status"] == "succeeded" and done["attempts"] == 1 and done["republished"] == 1


@pytest.mark.parametrize("cluster", ["embedded"], indirect=True)
def test_a_message_that_comes_back_while_its_job_still_runs_does_not_restart_it(cluster: dict[str, Any]) -> None:
    """A broker outage that outlived a running job's lease (or a connection closed under it) puts its
    message back; the job's run still beats its heartbeat, so the message is deferred, not run."""
    from modelq.client import Client
    from modelq.lease import UNACKED

    app = cluster["app"]
    env = {**cluster["env"], "MODELQ_RUN_HEARTBEAT_INTERVAL": "0.5"}
    cluster["workers"].append(start_worker(env, "default", "serve-beat@%h"))  # prefork, 2 processes
    wait_for_worker(app, "serve-beat@")
    client = Client.in_process(app=app)
    job = client.submit("sleep", {"seconds": 5, "steps": 50})
    wait_for(lambda: client.get(job["id"])["status"] == "running", timeout=60, what="the job to start")
    with app.connection_for_write() as conn:
        redis = conn.default_channel.client
        payload = next(
            p for p in (json.loads(raw)[0] for raw in redis.hvals(UNACKED)) if p["headers"]["id"] == job["id"]
        )
        payload["headers"]["redelivered"] = True  # as kombu restores a message whose lease lapsed
        payload["properties"]["delivery_info"]["redelivered"] = True
        redis.lpush("default", json.dumps(payload))
    wait_for(lambda: _depth(app) == 0, timeout=30, what="the worker's free process to take the message back")
    done = client.wait(job["id"], timeout=60)
    assert done["status"] == "succeeded" and done["attempts"] == 1


@pytest.mark.parametrize("cluster", ["embedded", "redis"], indirect=True)
def test_a_message_left_unacknowledged_by_nobody_runs_without_waiting_for_the_visibility_timeout(
    cluster: dict[str, Any],
) -> None:
    """A worker that loses its connection drops the jobs it had reserved, and a Redis that went away
    cannot take their messages back: they sit unacknowledged, held by no worker. Their jobs run long
    before the visibility timeout (an hour), each once, and the stale message is forgotten."""
    from modelq.client import Client
    from modelq.lease import UNACKED, UNACKED_INDEX

    app = cluster["app"]
    client = Client.in_process(app=app)
    ids = [client.submit("echo", {"n": n})["id"] for n in range(3)]
    wait_for(lambda: _depth(app) == 3, timeout=30, what="the messages to be queued")
    with app.connection_for_write() as conn:
        redis = conn.default_channel.client
        payload = json.loads(redis.rpop("default"))  # as a worker's BRPOP takes it, then kombu records it
        tag = payload["properties"]["delivery_tag"]
        entry = json.dumps([payload, "default", "default"])
        redis.pipeline().zadd(UNACKED_INDEX, {tag: time.time()}).hset(UNACKED, tag, entry).execute()
    cluster["workers"].append(start_worker(cluster["env"], "default", f"serve-{cluster['name']}@%h"))
    done = [client.wait(job_id, timeout=90) for job_id in ids]
    assert [job["result"] for job in done] == [{"n": n} for n in range(3)]
    assert {job["attempts"] for job in done} == {1}
    assert sorted(job["republished"] for job in done) == [0, 0, 1]
    with app.connection_for_write() as conn:
        assert not conn.default_channel.client.hexists(UNACKED, tag)


@pytest.mark.parametrize("cluster", ["embedded", "redis"], indirect=True)
def test_a_killed_worker_s_job_runs_again_without_waiting_for_the_visibility_timeout(cluster: dict[str, Any]) -> None:
    """A whole worker killed mid-job (the OOM killer, a lost machine) leaves the job's message
    unacknowledged in Redis, where kombu would put it back only after the visibility timeout (an
    hour). Once the run's heartbeat is quiet, the job is queued again and another worker runs it."""
    import os
    import signal

    from modelq.client import Client
    from modelq.lease import UNACKED

    app = cluster["app"]
    env = {**cluster["env"], "MODELQ_RUN_HEARTBEAT_INTERVAL": "0.5"}
    workers = {name: start_worker(env, "default", f"{name}@%h", "--pool", "solo") for name in ("solo-a", "solo-b")}
    cluster["workers"].extend(workers.values())
    for name in workers:
        wait_for_worker(app, f"{name}@")
    client = Client.in_process(app=app)
    job = client.submit("sleep", {"seconds": 3, "steps": 30})
    running = wait_for(
        lambda: (j := client.get(job["id"]))["status"] == "running" and j["worker"] and j,
        timeout=60,
        what="the job to start",
    )
    victim = running["worker"].split("@")[0]
    os.kill(workers[victim].pid, signal.SIGKILL)
    workers[victim].wait(timeout=30)
    done = client.wait(job["id"], timeout=90)
    assert done["status"] == "succeeded" and done["attempts"] == 2 and done["republished"] == 1
    assert not done["worker"].startswith(victim)
    with app.connection_for_write() as conn:
        assert conn.default_channel.client.hlen(UNACKED) == 0  # the dead worker's message was forgotten


@pytest.mark.parametrize("cluster", ["embedded"], indirect=True)
def test_a_job_handed_over_to_later_tasks_is_not_taken_for_lost(cluster: dict[str, Any]) -> None:
    """A timetable job publishes its islands and hands itself over: it runs on, in no process of its own
    (no heartbeat, no worker holding it), for longer than the grace. It runs once, not again from the start."""
    from datetime import datetime, timedelta, timezone

    from sqlalchemy import select

    from modelq.client import Client
    from modelq.jobs.records import Job, aware
    from modelq.reconciler import Reconciler
    from modelq.workloads.timetable import instance_to_dict
    from modelq.workloads.timetable.generate import generate_instance

    app = cluster["app"]
    store = app.modelq.store
    env = {**cluster["env"], "MODELQ_RUN_HEARTBEAT_INTERVAL": "0.5"}
    cluster["workers"].append(start_worker(env, "cpu", "islands@%h"))
    wait_for_worker(app, "islands@")
    instance, _ = generate_instance(11, courses=24, rooms=4, fill=0.8, curricula=8, unavailability=20)
    client = Client.in_process(app=app)
    job = client.submit(
        "timetable", {"instance": instance_to_dict(instance), "quality_mode": "fast", "seed": 3, "time_limit": 12}
    )
    # once it has run past the grace with its heartbeat quiet (three beats of 0.5 s missed), two passes of
    # the reconciler (made here, with that beat, besides the watcher's own) leave it running
    reconciler = Reconciler(app, "test")
    reconciler.settings = app.modelq.settings.model_copy(update={"run_heartbeat_interval": 0.5})

    def quiet_past_the_grace() -> bool:
        with store.engine.connect() as conn:
            row = conn.execute(select(Job.status, Job.started_at, Job.heartbeat_at).where(Job.id == job["id"])).one()
        now = datetime.now(timezone.utc)
        return (
            row.status == "running"
            and aware(row.started_at) < now - timedelta(seconds=2)
            and aware(row.heartbeat_at) < now - timedelta(seconds=1.5)
        )

    wait_for(quiet_past_the_grace, timeout=30, what="the job to run past the grace with no heartbeat")
    assert not reconciler.reconcile()["republished"] and not reconciler.reconcile()["republished"]
    done = client.wait(job["id"], timeout=120)
    assert done["status"] == "succeeded", done["error"]
    assert done["attempts"] == 1 and done["republished"] == 0

"""A queue prefix per user: two users share one RabbitMQ vhost and never see each other's queues or workers."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import _fresh_rabbitmq_vhost, child_env, start_worker, stop_process, wait_for_worker


@pytest.fixture(scope="module")
def two_users(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    from modelq.celery_app import create_celery_app
    from modelq.config import load_settings

    broker = _fresh_rabbitmq_vhost("prefix")
    users, workers = {}, []
    try:
        for name in ("alice", "bob"):
            home = tmp_path_factory.mktemp(name)
            env = {"MODELQ_HOME": str(home), "MODELQ_BROKER_URL": broker, "MODELQ_QUEUE_PREFIX": name}
            settings = load_settings(home=home, broker_url=broker, queue_prefix=name, imports=["modelq_test_tasks"])
            app = create_celery_app(settings)
            app.modelq.store  # noqa: B018
            workers.append(start_worker(env, "default", f"{name}@%h"))
            users[name] = {"app": app, "env": env, "home": home}
        for name, user in users.items():
            wait_for_worker(user["app"], f"{name}@")
        yield users
    finally:
        for worker in workers:
            stop_process(worker)


def test_each_user_s_jobs_run_on_their_own_workers(two_users: dict, tmp_path: Path) -> None:
    from modelq.client import Client

    for name, user in two_users.items():
        client = Client.in_process(app=user["app"])
        job = client.submit("echo", {"user": name})
        done = client.wait(job["id"], timeout=60)
        # the job ran, on this user's worker, and its record names the queue without the prefix
        assert done["status"] == "succeeded" and done["worker"].startswith(f"{name}@")
        assert done["result"] == {"user": name} and done["queue"] == "default"


def test_inspect_and_celery_see_only_their_own_prefix(two_users: dict, tmp_path: Path) -> None:
    alice = two_users["alice"]
    # remote control is per prefix: alice's ping reaches alice's worker only
    replies = alice["app"].control.ping(timeout=1.0)
    assert [name for reply in replies for name in reply] and all(
        name.startswith("alice@") for reply in replies for name in reply
    )
    # Celery's own CLI, pointed at alice's settings, sees her broker queues
    result = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "modelq", "inspect", "active_queues", "--json", "--timeout", "3"],
        capture_output=True,
        text=True,
        env=child_env(**alice["env"]),
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    queues = {q["name"] for reply in json.loads(result.stdout).values() for q in reply}
    # (a model queue too: tests.infer on default routes jobs by model, see affinity)
    assert "alice.default" in queues and all(q.startswith("alice.") for q in queues), queues


def test_queue_depths_and_purge_are_per_user(two_users: dict, tmp_path: Path) -> None:
    from modelq.client import Client
    from modelq.ops import purge_queue, queue_depths

    alice, bob = two_users["alice"], two_users["bob"]
    # given a job of alice's waiting on cpu, which no worker here consumes
    job = Client.in_process(app=alice["app"]).submit("tests.touch", {"path": str(tmp_path / "x")})
    status = subprocess.run(
        [sys.executable, "-m", "modelq", "status", "--json"],
        capture_output=True,
        text=True,
        env=child_env(**alice["env"]),
        cwd=tmp_path,
        timeout=60,
    )
    assert json.loads(status.stdout)["queues"]["cpu"] == 1
    # then bob's cpu queue is empty, and purging alice's leaves bob's alone
    assert queue_depths(bob["app"], ["cpu"]) == {"cpu": 0}
    assert purge_queue(alice["app"], "cpu") == (1, 1)
    assert alice["app"].modelq.store.get(job["id"])["status"] == "cancelled"

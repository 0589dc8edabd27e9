"""Brokers restarted mid-stream: workers consume again.

The embedded broker is killed and comes back from its append-only file: no accepted job is lost;
when it comes back without the messages that waited in it, the worker publishes them again.
The system Redis (which keeps nothing on disk) and RabbitMQ are restarted as an operator would:
the same worker processes reconnect and a canary job finishes within a minute.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import AMQP_HOST, REDIS_URL, _backend_env, start_worker, stop_process, wait_for, wait_for_worker

log = logging.getLogger(__name__)


@dataclass
class KilledStream:
    app: Any
    client: Any
    broker: Any
    accepted: list[str]


@contextmanager
def _stream_then_kill(
    home: Path, tmp_path: Path, hostname: str, seconds: float, env: dict[str, str], *extra: str
) -> Iterator[KilledStream]:
    """A worker on `default` of the embedded broker, given 12 jobs of `seconds` each (some of them
    still waiting in the broker), then the broker SIGKILLed; the worker is stopped afterwards."""
    from modelq.broker import EmbeddedRedis
    from modelq.celery_app import create_celery_app
    from modelq.client import Client
    from modelq.config import load_settings

    settings = load_settings(home=home, imports=["modelq_test_tasks"])
    app = create_celery_app(settings, start_broker=True)
    app.modelq.store  # noqa: B018 - migrate before the worker starts
    worker = start_worker({"MODELQ_HOME": str(home), **env}, "default", f"{hostname}@%h", *extra)
    try:
        wait_for_worker(app, f"{hostname}@")
        client = Client.in_process(app=app)
        broker = EmbeddedRedis(home)
        accepted = _slow_jobs(client, tmp_path, "j", 12, seconds)
        os.kill(broker.pid(), signal.SIGKILL)
        wait_for(lambda: not broker.ping(), timeout=10, what="the broker to die")
        yield KilledStream(app=app, client=client, broker=broker, accepted=accepted)
    finally:
        stop_process(worker)


def _slow_jobs(client: Any, tmp_path: Path, prefix: str, count: int, seconds: float) -> list[str]:
    """Submit `count` tests.slow_count jobs (each counts its starts in its own file); their ids."""
    return [
        client.submit("tests.slow_count", {"path": str(tmp_path / f"{prefix}{i}"), "seconds": seconds})["id"]
        for i in range(count)
    ]


def test_embedded_broker_killed_mid_stream_loses_no_accepted_job(home: Path, tmp_path: Path) -> None:
    from modelq.errors import BrokerUnavailable

    # given a stream of jobs, some of them waiting in the broker when it dies
    with _stream_then_kill(home, tmp_path, "restart", 0.3, {}) as stream:
        app, client, accepted = stream.app, stream.client, stream.accepted
        # while it is down, a submission that would go to the broker at once (nothing waits on "cpu") is
        # refused clearly (not accepted, then lost), and leaves no record
        recorded = sum(app.modelq.store.counts().values())
        with pytest.raises(BrokerUnavailable, match="could not publish"):
            client.submit("tests.touch", {"path": str(tmp_path / "refused")})
        assert sum(app.modelq.store.counts().values()) == recorded
        # and one that waits its turn behind the stream anyway (fair share holds it in the job store) is
        # accepted: it goes to the broker once the broker is back
        assert app.modelq.store.held_counts().get("default")
        behind = client.submit("tests.slow_count", {"path": str(tmp_path / "behind"), "seconds": 0.1})
        assert behind["status"] == "queued" and app.modelq.store.held_counts()["default"] >= 1
        accepted.append(behind["id"])
        # when it comes back (from its append-only file), more jobs are accepted
        stream.broker.ensure_running()
        accepted += _slow_jobs(client, tmp_path, "k", 6, 0.1)
        # then every accepted job finishes, each exactly once
        done = [client.wait(job_id, timeout=180) for job_id in accepted]
        assert [d["status"] for d in done] == ["succeeded"] * len(accepted)
        assert all(d["result"] == 1 for d in done)


def test_a_prefork_worker_publishes_again_the_jobs_a_restarted_broker_lost(home: Path, tmp_path: Path) -> None:
    import redis

    # the default worker (a prefork pool over the embedded SQLite store), its pool processes forked
    # again after every job while its parent reconciles beside them
    env = {"MODELQ_RECONCILE_GRACE": "2", "MODELQ_RECONCILE_INTERVAL": "0.5"}
    with _stream_then_kill(home, tmp_path, "lost", 0.2, env, "--max-tasks-per-child", "1") as stream:
        # the broker comes back without the messages that waited in it (as from an append-only file
        # that missed its last writes): they held the queue's whole window, so no job starts and
        # releases the held ones
        stream.broker.ensure_running()
        server = redis.Redis(unix_socket_path=str(stream.broker.socket))
        lists = [key for key in server.keys("default*") if server.type(key) == b"list"]
        assert sum(server.llen(key) for key in lists) > 0
        server.delete(*lists)
        server.close()
        # the worker's reconciler publishes them again: every job finishes, each exactly once
        done = [stream.client.wait(job_id, timeout=120) for job_id in stream.accepted]
        assert [d["status"] for d in done] == ["succeeded"] * len(stream.accepted)
        assert all(d["result"] == 1 for d in done)
        assert any(d["republished"] for d in done)


# The system Redis and RabbitMQ -----------------------------------------------------------
#
# These restart servers other suites on this machine use: run them under the shared lock,
#   flock /tmp/modelq-system-services.lock .venv/bin/python -m pytest tests/test_broker_restart.py
# Each test puts its server back in `finally`, started exactly as scripts/services starts it.
# The timings they measure are logged: add `-o log_cli=true --log-cli-level=INFO` to see them.

#: Exactly how scripts/services starts the system Redis (no persistence: a restart empties it).
REDIS_SERVER = [
    "redis-server",
    "--daemonize",
    "yes",
    "--bind",
    "127.0.0.1",
    "-::1",
    "--port",
    "6379",
    "--save",
    "",
    "--appendonly",
    "no",
    "--dir",
    "/var/lib/redis",
    "--logfile",
    "/var/log/redis/ci.log",
]
#: The canary's deadline, counted from the moment the restarted broker answers again.
CANARY_DEADLINE = 60.0
#: A submission while the broker is down must fail, not hang, well within this.
OUTAGE_SUBMIT_DEADLINE = 30.0

needs_system_redis = pytest.mark.skipif(
    REDIS_URL != "redis://127.0.0.1:6379" or shutil.which("redis-server") is None,
    reason="restarts the local system Redis on 127.0.0.1:6379",
)
needs_system_rabbitmq = pytest.mark.skipif(
    AMQP_HOST != "127.0.0.1:5672" or shutil.which("rabbitmqctl") is None,
    reason="restarts the local RabbitMQ node on 127.0.0.1:5672",
)


def _quiet(cmd: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess:
    """Run a service command with no terminal and no inherited pipes: a daemon it starts outlives the test."""
    return subprocess.run(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=timeout,
        start_new_session=True,
    )


def _port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def _redis_answers() -> bool:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_timeout=1, socket_connect_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def _start_system_redis() -> None:
    if not _redis_answers():
        _quiet(REDIS_SERVER)
        wait_for(_redis_answers, timeout=30, interval=0.1, what="the system Redis to answer PING")


def _rabbitmq(*args: str, timeout: float = 180.0) -> subprocess.CompletedProcess:
    return subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=timeout)


def _start_rabbitmq() -> None:
    """Bring the node back however it was left: stopped entirely, or its app stopped."""
    if subprocess.run(["rabbitmq-diagnostics", "-q", "check_running"], capture_output=True, timeout=60).returncode == 0:
        return
    if subprocess.run(["rabbitmq-diagnostics", "-q", "ping"], capture_output=True, timeout=60).returncode == 0:
        _rabbitmq("start_app")
    else:
        _quiet(["rabbitmq-server", "-detached"], timeout=120)
    # -detached returns before the node registers, and await_startup fails at once on a node it
    # cannot reach yet: ask again until the node is there and has booted.
    wait_for(
        lambda: _rabbitmq("await_startup", "--timeout", "120").returncode == 0,
        timeout=180,
        interval=0.5,
        what="RabbitMQ to start again",
    )


@dataclass
class ProvenWorker:
    env: dict[str, str]
    app: Any
    client: Any
    worker: subprocess.Popen
    hostname: str


@contextmanager
def _proven_worker(name: str, home: Path) -> Iterator[ProvenWorker]:
    """A worker on `default` of the system broker `name` (as the contract tests reach it), shown to run
    a job before the test goes on; stopped afterwards."""
    from modelq.celery_app import create_celery_app
    from modelq.client import Client
    from modelq.config import load_settings

    env = _backend_env(name, home, tag="restart")
    broker, results = env["MODELQ_BROKER_URL"], env.get("MODELQ_RESULT_BACKEND")
    settings = load_settings(home=home, broker_url=broker, result_backend=results, imports=["modelq_test_tasks"])
    app = create_celery_app(settings)
    app.modelq.store  # noqa: B018 - migrate before the worker starts
    hostname = f"restart-{name}-{uuid.uuid4().hex[:6]}@"
    worker = start_worker(env, "default", f"{hostname}%h")
    try:
        wait_for_worker(app, hostname)
        client = Client.in_process(app=app)
        assert client.run("echo", {"before": "restart"}, timeout=60) == {"before": "restart"}
        yield ProvenWorker(env=env, app=app, client=client, worker=worker, hostname=hostname)
    finally:
        stop_process(worker)


def _submit_during_outage(client) -> None:  # noqa: ANN001 - modelq.Client
    """Submit while the broker is down: refused with BrokerUnavailable, quickly."""
    from modelq.errors import BrokerUnavailable

    began = time.monotonic()
    with pytest.raises(BrokerUnavailable, match="could not publish"):
        client.submit("echo", {"during": "outage"})
    took = time.monotonic() - began
    log.info("a submission during the outage was refused after %.2fs", took)
    assert took < OUTAGE_SUBMIT_DEADLINE, f"a submission during the outage took {took:.1f}s to fail"


def _canary(proven: ProvenWorker, stopped_at: float) -> dict:
    """Submit a canary the moment the broker is back; the same worker process must finish it in time."""
    back = time.monotonic()
    canary = proven.client.submit("echo", {"canary": "after restart"})
    done = proven.client.wait(canary["id"], timeout=CANARY_DEADLINE)
    now = time.monotonic()
    log.info("broker down for %.2fs; canary finished %.2fs after it answered again", back - stopped_at, now - back)
    assert done["status"] == "succeeded" and done["result"] == {"canary": "after restart"}
    reconnected = done["worker"].startswith(proven.hostname) and proven.worker.poll() is None
    assert reconnected, "the worker exited instead of reconnecting"
    return done


@needs_system_redis
def test_a_worker_consumes_again_after_the_system_redis_restarts(tmp_path: Path) -> None:
    """The system Redis shut down and started again, twice (with CI's command): it keeps nothing,
    so what was queued is gone, but the same worker process reconnects and runs new jobs."""
    # given a worker that runs jobs from the system Redis
    with _proven_worker("redis", tmp_path / "home") as proven:
        try:
            # Twice: workers of some Celery/kombu releases came back after the first restart only (celery#8030).
            for _ in range(2):
                # when Redis shuts down, a submission is refused quickly rather than left hanging
                stopped_at = time.monotonic()
                _quiet(["redis-cli", "-p", "6379", "shutdown", "nosave"])
                wait_for(lambda: not _redis_answers(), timeout=30, what="the system Redis to stop")
                _submit_during_outage(proven.client)
                # and it starts again
                _start_system_redis()
                # then a canary submitted at once is run by the same worker process within the deadline
                _canary(proven, stopped_at)
        finally:
            _start_system_redis()


@needs_system_rabbitmq
def test_a_worker_consumes_again_after_rabbitmq_restarts(tmp_path: Path) -> None:
    """A full RabbitMQ restart: `rabbitmqctl shutdown` (the node and its Erlang VM, waiting until
    the process is gone) then `rabbitmq-server -detached` and `rabbitmqctl await_startup`.
    The vhost, its permissions and a job queued before the restart survive on disk; the same
    worker process reconnects."""
    # given a worker that runs jobs from its own vhost, and a job waiting on a queue it does not read yet
    with _proven_worker("rabbitmq", tmp_path / "home") as proven:
        vhost = proven.env["MODELQ_BROKER_URL"].rsplit("/", 1)[1]
        client, app = proven.client, proven.app
        try:
            waiting = client.submit("tests.touch", {"path": str(tmp_path / "touched")})
            # when the whole node stops, a submission is refused quickly rather than left hanging
            stopped_at = time.monotonic()
            stopped = _rabbitmq("shutdown")
            assert stopped.returncode == 0, stopped.stderr
            wait_for(lambda: not _port_open(5672), timeout=30, what="RabbitMQ to close its port")
            _submit_during_outage(client)
            # and it starts again, with the vhost and guest's permissions on it
            _start_rabbitmq()
            permissions = _rabbitmq("list_permissions", "-p", vhost, "--silent").stdout.split()
            assert permissions[:4] == ["guest", ".*", ".*", ".*"], permissions
            # then a canary submitted at once is run by the same worker process within the deadline
            done = _canary(proven, stopped_at)
            # and the waiting job outlived the restart (a durable queue, a persistent message): it runs once read
            cpu = app.modelq.settings.broker_queue("cpu")
            app.control.add_consumer(
                cpu, exchange=cpu, routing_key=cpu, destination=[done["worker"]], reply=True, timeout=5
            )
            survived = client.wait(waiting["id"], timeout=60)
            assert survived["status"] == "succeeded" and survived["worker"] == done["worker"]
        finally:
            _start_rabbitmq()

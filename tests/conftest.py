"""Fixtures that start real servers: the embedded Redis, the system Redis, RabbitMQ, PostgreSQL.

Job contract tests take the ``backend`` fixture and run once per broker:
``embedded`` (the bundled redis-server on a Unix socket), ``redis`` (the system
Redis) and ``rabbitmq`` (RabbitMQ broker with a Redis result backend). Each runs a
real ``modelq worker`` subprocess.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from modelq import testing
from modelq.testing import free_port, stop_process, worker_command  # noqa: F401 - test modules import them from here
from modelq.testing import wait_until as wait_for

TESTS_DIR = Path(__file__).resolve().parent
REDIS_URL = os.environ.get("MODELQ_TEST_REDIS", "redis://127.0.0.1:6379")
AMQP_HOST = os.environ.get("MODELQ_TEST_AMQP_HOST", "127.0.0.1:5672")
POSTGRES_URL = os.environ.get("MODELQ_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
#: One vhost per test session, so two suites on one machine never cut each other's connections.
TEST_VHOST = f"modelq_test_{os.getpid()}"
#: Redis databases the suite owns (flushed before use): broker, contract results, other results (+1).
REDIS_BROKER_DB, REDIS_RESULT_DB = 13, 14


def child_env(**extra: str) -> dict[str, str]:
    """Environment for modelq subprocesses: the test task module importable, no stray MODELQ_ settings."""
    env = testing.child_env()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS_DIR), env.get("PYTHONPATH")]))
    env["MODELQ_IMPORTS"] = "modelq_test_tasks"
    env.update(extra)
    return env


@pytest.fixture(autouse=True)
def _the_fast_tier_starts_no_process(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests marked ``fast`` (``pytest -m fast``: about a minute, for the edit-test loop) run in this process
    alone: one that starts a process belongs to the system tier, and fails here saying so."""
    if request.node.get_closest_marker("fast") is None:
        return
    import multiprocessing

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a test marked fast started a process: it belongs to the system tier")

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", refuse)


@pytest.fixture(scope="session", autouse=True)
def _no_stray_embedded_brokers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A test that forgot to stop its embedded broker must not leave a redis-server behind."""
    yield
    base = str(tmp_path_factory.getbasetemp())
    subprocess.run(["pkill", "-f", f"redis-server.*{base}"], capture_output=True)
    ctl = shutil.which("rabbitmqctl")
    for vhost in _VHOSTS if ctl is not None else []:
        subprocess.run([ctl, "delete_vhost", vhost], capture_output=True)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Tests build their settings explicitly; nothing leaks in from the shell or a modelq.yml.
    for key in list(os.environ):
        if key.startswith("MODELQ_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    if str(TESTS_DIR) not in sys.path:
        sys.path.insert(0, str(TESTS_DIR))


# Brokers ---------------------------------------------------------------------------------


def _flush_redis(db: int) -> None:
    import redis

    client = redis.Redis.from_url(f"{REDIS_URL}/{db}")
    client.flushdb()
    client.close()


_VHOSTS: list[str] = []


def _fresh_rabbitmq_vhost(tag: str) -> str:
    """A clean vhost of our own per fixture: queue arguments never clash with anyone's queues,
    and two workers of different fixtures never take each other's jobs."""
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        return f"amqp://guest:guest@{AMQP_HOST}//"
    vhost = f"{TEST_VHOST}_{tag}"
    subprocess.run([ctl, "delete_vhost", vhost], capture_output=True)
    subprocess.run([ctl, "add_vhost", vhost], capture_output=True, check=True)
    subprocess.run([ctl, "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"], capture_output=True, check=True)
    _VHOSTS.append(vhost)
    return f"amqp://guest:guest@{AMQP_HOST}/{vhost}"


@dataclass
class Backend:
    """A broker with a running worker, and the settings and app that talk to it."""

    name: str
    env: dict[str, str]
    settings: Any
    app: Any
    worker: subprocess.Popen
    home: Path

    @property
    def client(self):  # noqa: ANN201
        from modelq.client import Client

        return Client.in_process(app=self.app)


def _backend_env(name: str, home: Path, tag: str = "contract") -> dict[str, str]:
    """Broker settings for a backend; ``tag`` keeps fixtures that coexist apart."""
    env = {"MODELQ_HOME": str(home)}
    result_db = REDIS_RESULT_DB if tag == "contract" else REDIS_RESULT_DB + 1
    if name == "redis":
        _flush_redis(REDIS_BROKER_DB)
        env["MODELQ_BROKER_URL"] = f"{REDIS_URL}/{REDIS_BROKER_DB}"
    elif name == "rabbitmq":
        _flush_redis(result_db)
        env["MODELQ_BROKER_URL"] = _fresh_rabbitmq_vhost(tag)
        env["MODELQ_RESULT_BACKEND"] = f"{REDIS_URL}/{result_db}"
    return env


def start_worker(
    env: dict[str, str], queues: str = "default", hostname: str | None = None, *extra: str
) -> subprocess.Popen:
    hostname = hostname or f"test-{uuid.uuid4().hex[:6]}@%h"
    return subprocess.Popen(
        worker_command(queues, hostname, pool="prefork", concurrency=2, extra=extra),
        env=child_env(**env),
    )


def wait_for_worker(app: Any, hostname_prefix: str, timeout: float = 60.0) -> None:
    def answered() -> bool:
        replies = app.control.ping(timeout=0.5) or []
        return any(name.startswith(hostname_prefix) for reply in replies for name in reply)

    wait_for(answered, timeout=timeout, interval=0.2, what=f"worker {hostname_prefix} to answer a ping")


@pytest.fixture(scope="session", params=["embedded", "redis", "rabbitmq"])
def backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    from modelq.celery_app import create_celery_app
    from modelq.config import load_settings

    name = request.param
    home = tmp_path_factory.mktemp(f"home-{name}")
    env = _backend_env(name, home)
    settings = load_settings(
        home=home,
        broker_url=env.get("MODELQ_BROKER_URL"),
        result_backend=env.get("MODELQ_RESULT_BACKEND"),
        imports=["modelq_test_tasks"],
    )
    if str(TESTS_DIR) not in sys.path:
        sys.path.insert(0, str(TESTS_DIR))
    app = create_celery_app(settings, start_broker=True)
    app.modelq.store  # noqa: B018 - migrate before the worker starts
    worker = start_worker(env, "default", f"contract-{name}@%h")
    try:
        wait_for_worker(app, f"contract-{name}@")
        yield Backend(name=name, env=env, settings=settings, app=app, worker=worker, home=home)
    finally:
        stop_process(worker)
        if settings.uses_embedded_broker:
            from modelq.broker import EmbeddedRedis

            EmbeddedRedis(home).stop()


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    """A MODELQ_HOME whose embedded broker (if a test starts one) is stopped afterwards."""
    from modelq.broker import EmbeddedRedis

    path = tmp_path / "home"
    yield path
    EmbeddedRedis(path).stop()


# Databases -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped afterwards."""
    from sqlalchemy import create_engine, text

    name = f"modelq_test_{uuid.uuid4().hex[:8]}"
    admin = create_engine(
        f"{POSTGRES_URL.replace('postgresql://', 'postgresql+psycopg://')}/postgres", isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{POSTGRES_URL}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path):  # noqa: ANN201
    from modelq.jobs.store import JobStore

    if request.param == "sqlite":
        store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}", lock_dir=tmp_path)
    else:
        url = request.getfixturevalue("postgres_url")
        store = JobStore(url)
    store.migrate()
    if request.param == "postgresql":
        from sqlalchemy import text

        with store.engine.begin() as conn:
            conn.execute(text("DELETE FROM modelq_jobs"))
    yield store
    store.dispose()

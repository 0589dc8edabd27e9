"""Security: who may reach the API (trusted hosts), bounded inputs that never break the job list,
per-owner limits, and passwords that never show.

Each test goes through the real API (uvicorn in a thread) over a real broker with a real worker
where a job has to run. The model source rules are in ``test_embed_rerank.py`` (they need an
embedding worker).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import child_env, start_worker, stop_process, wait_for, wait_for_worker
from modelq.testing import serving, worker_command

ALICE_KEY = "mq_alice-security-key-0123456789abcdefghijklmnopqrs"
BOB_KEY = "mq_bob-security-key-0123456789abcdefghijklmnopqrstu"
PASSWORD = "Sup3rSecretPassw0rd"
# Redis's default user without a password (nopass) accepts any password, and PostgreSQL here
# trusts local connections: both URLs carry a password that must never show.
REDIS_URL = f"redis://default:{PASSWORD}@127.0.0.1:6379/9"


@pytest.fixture(scope="module")
def open_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """The API as `modelq up` serves it (no keys) over the embedded broker, with a prefork worker
    whose default hard time limit is 2 s."""
    from modelq.api import create_api
    from modelq.broker import EmbeddedRedis
    from modelq.celery_app import create_celery_app
    from modelq.config import load_settings

    home = tmp_path_factory.mktemp("security") / "home"
    # The submitter's limits travel with each message (Celery): the API and the worker share the setting.
    settings = load_settings(home=home, imports=["modelq_test_tasks"], task_time_limit=2)
    app = create_celery_app(settings, start_broker=True)
    app.modelq.store  # noqa: B018 - migrate before the worker starts
    worker = start_worker({"MODELQ_HOME": str(home), "MODELQ_TASK_TIME_LIMIT": "2"}, "default", "security@%h")
    try:
        wait_for_worker(app, "security@")
        with serving(create_api(settings, celery_app=app)) as url:
            with httpx.Client(base_url=url, timeout=60) as http:
                yield {"url": url, "http": http, "app": app}
    finally:
        stop_process(worker)
        EmbeddedRedis(home).stop()


def _job_count(app) -> int:  # noqa: ANN001
    return sum(app.modelq.store.counts().values())


def test_without_keys_only_loopback_host_names_are_served(open_api: dict) -> None:
    http, port = open_api["http"], open_api["url"].rsplit(":", 1)[1]
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "LOCALHOST"):
        assert http.get("/v1/tasks", headers={"Host": host}).status_code == 200, host
    before = _job_count(open_api["app"])
    # A page on attacker.example whose DNS name now resolves to 127.0.0.1 (DNS rebinding)
    for host in (f"attacker.example:{port}", "127.0.0.1.attacker.example", "localhost.attacker.example"):
        refused = http.post("/v1/jobs", json={"task": "echo", "input": {"x": 1}}, headers={"Host": host})
        assert refused.status_code == 400, host
        assert "MODELQ_ALLOWED_HOSTS" in refused.json()["message"] and refused.json()["error"] == "UntrustedHost"
        assert http.get("/ui/", headers={"Host": host}).status_code == 400
    assert _job_count(open_api["app"]) == before


def test_allowed_hosts_admits_a_name_and_keys_serve_any_host(tmp_path: Path) -> None:
    from modelq.access import hash_key
    from modelq.api import create_api
    from modelq.config import load_settings

    def status(settings, host: str) -> int:  # noqa: ANN001
        with serving(create_api(settings)) as url:
            return httpx.get(f"{url}/healthz", headers={"Host": host}, timeout=30).status_code
        raise AssertionError("not served")

    home = tmp_path / "home"
    named = load_settings(home=home, allowed_hosts=["modelq.internal", "*.lab.example"])
    assert status(named, "modelq.internal:8000") == 200
    assert status(named, "gpu1.lab.example") == 200
    assert status(named, "localhost") == 200  # loopback stays served
    assert status(named, "attacker.example") == 400
    keyed = load_settings(home=home, api_keys={"alice": [hash_key(ALICE_KEY)]})
    assert status(keyed, "modelq.example.com") == 200  # keys guard it: any host
    keyed_named = load_settings(home=home, api_keys={"alice": [hash_key(ALICE_KEY)]}, allowed_hosts=["modelq.internal"])
    assert status(keyed_named, "modelq.example.com") == 400


def _nested(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


def test_input_that_cannot_be_stored_and_given_back_is_refused_before_it_is_recorded(open_api: dict) -> None:
    http, app = open_api["http"], open_api["app"]
    before = _job_count(app)
    for depth in (65, 900, 5000):  # as raw text: JSON encoders give up long before 5000
        raw = '{"task": "echo", "input": {"payload": ' + "[" * (depth - 1) + "]" * (depth - 1) + "}}"
        deep = http.post("/v1/jobs", content=raw, headers={"content-type": "application/json"})
        if depth > 900:  # past what Python's JSON parser takes: the body cannot be read at all
            assert deep.status_code == 400 and "parsing the body" in deep.json()["message"]
            continue
        assert deep.status_code == 422, (depth, deep.text[:200])
        assert "MODELQ_MAX_INPUT_DEPTH" in deep.json()["message"] and deep.json()["field"] == "input"
    for raw in ('{"task": "echo", "input": {"x": NaN}}', '{"task": "echo", "input": {"x": [1, Infinity]}}'):
        refused = http.post("/v1/jobs", content=raw, headers={"content-type": "application/json"})
        assert refused.status_code == 422 and "finite" in refused.json()["message"], refused.text
    assert _job_count(app) == before
    # the job list still answers for everyone, and a job at the limit runs and comes back whole
    assert http.get("/v1/jobs").status_code == 200
    ok = http.post("/v1/jobs", json={"task": "echo", "input": {"payload": _nested(63)}})
    assert ok.status_code == 202, ok.text
    done = http.get(f"/v1/jobs/{ok.json()['id']}", params={"wait": 30}).json()
    assert done["status"] == "succeeded" and done["result"] == {"payload": _nested(63)}
    assert http.get("/v1/jobs").status_code == 200


def test_sleep_is_bounded_and_a_default_hard_time_limit_stops_a_job(open_api: dict) -> None:
    http, app = open_api["http"], open_api["app"]
    before = _job_count(app)
    for seconds in (-5, 1e9, "10", True):
        refused = http.post("/v1/jobs", json={"task": "sleep", "input": {"seconds": seconds}})
        assert refused.status_code == 422 and refused.json()["field"] == "seconds", (seconds, refused.text)
    assert http.post("/v1/jobs", json={"task": "sleep", "input": {"seconds": 1, "steps": 0}}).status_code == 422
    assert _job_count(app) == before
    quick = http.post("/v1/jobs", json={"task": "sleep", "input": {"seconds": 0}}).json()
    assert http.get(f"/v1/jobs/{quick['id']}", params={"wait": 30}).json()["status"] == "succeeded"
    # MODELQ_TASK_TIME_LIMIT=2 here: a 20 s sleep is stopped, and the worker goes on
    long = http.post("/v1/jobs", json={"task": "sleep", "input": {"seconds": 20, "steps": 200}}).json()
    stopped = wait_for(
        lambda: (j := http.get(f"/v1/jobs/{long['id']}").json())["status"] == "failed" and j,
        timeout=60,
        what="the hard time limit to stop the job",
    )
    assert "TimeLimitExceeded" in stopped["error"], stopped["error"]
    after = http.post("/v1/jobs", json={"task": "echo", "input": {"after": True}}).json()
    assert http.get(f"/v1/jobs/{after['id']}", params={"wait": 30}).json()["result"] == {"after": True}


def test_one_owner_cannot_fill_the_queue_for_everyone(tmp_path: Path) -> None:
    """With keys and max_queued_per_owner=3 (no worker, so jobs stay queued)."""
    from modelq.access import hash_key
    from modelq.api import create_api
    from modelq.broker import EmbeddedRedis
    from modelq.config import load_settings

    home = tmp_path / "home"
    keys = {"alice": [hash_key(ALICE_KEY)], "bob": [hash_key(BOB_KEY)]}
    settings = load_settings(home=home, api_keys=keys, max_queued_per_owner=3, queue_full_retry_after=7)
    try:
        with serving(create_api(settings)) as url:
            alice = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ALICE_KEY}"}, timeout=30)
            bob = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {BOB_KEY}"}, timeout=30)
            for i in range(3):
                assert alice.post("/v1/jobs", json={"task": "echo", "input": {"i": i}}).status_code == 202
            full = alice.post("/v1/jobs", json={"task": "echo", "input": {"i": 3}})
            assert full.status_code == 429 and full.headers["Retry-After"] == "7"
            assert (
                "'alice' has 3 jobs waiting" in full.json()["message"]
                and "max_queued_per_owner" in full.json()["message"]
            )
            assert alice.get("/v1/jobs").json()["total"] == 3  # the refused one was not recorded
            assert bob.post("/v1/jobs", json={"task": "echo", "input": {"i": 0}}).status_code == 202
            first = alice.get("/v1/jobs").json()["jobs"][0]["id"]
            assert alice.delete(f"/v1/jobs/{first}").status_code == 200
            assert alice.post("/v1/jobs", json={"task": "echo", "input": {"i": 4}}).status_code == 202
    finally:
        EmbeddedRedis(home).stop()


def test_passwords_in_the_broker_and_database_urls_never_show(tmp_path: Path, postgres_url: str) -> None:
    from modelq.api import create_api
    from modelq.celery_app import create_celery_app
    from modelq.config import load_settings

    home = tmp_path / "home"
    database_url = postgres_url.replace("://postgres@", f"://postgres:{PASSWORD}@")
    assert PASSWORD in database_url
    env = {"MODELQ_HOME": str(home), "MODELQ_BROKER_URL": REDIS_URL, "MODELQ_DATABASE_URL": database_url}
    settings = load_settings(home=home, broker_url=REDIS_URL, database_url=database_url, imports=["modelq_test_tasks"])
    app = create_celery_app(settings)
    app.modelq.store  # noqa: B018 - migrate before the worker starts
    log = tmp_path / "worker.log"
    with log.open("w") as sink:
        worker = subprocess.Popen(
            worker_command("default", "secret@%h", pool="threads", loglevel="INFO"),
            env=child_env(**env),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    seen: list[str] = []
    try:
        wait_for_worker(app, "secret@")
        with serving(create_api(settings, celery_app=app)) as url:
            http = httpx.Client(base_url=url, timeout=60)
            job = http.post("/v1/jobs", json={"task": "echo", "input": {"x": 1}}).json()
            assert http.get(f"/v1/jobs/{job['id']}", params={"wait": 30}).json()["status"] == "succeeded"
            seen += [http.get("/v1/cluster").text, http.get("/metrics").text, http.get("/healthz").text]
        cli_env = child_env(**env)
        for args in (["status"], ["status", "--json"], ["inspect", "active-queues"], ["inspect", "stats"]):
            done = subprocess.run(
                [sys.executable, "-m", "modelq", *args], env=cli_env, capture_output=True, text=True, timeout=120
            )
            seen.append(done.stdout + done.stderr)
        # a broker that cannot be reached: the error names it without its password
        down = {**cli_env, "MODELQ_BROKER_URL": f"redis://default:{PASSWORD}@127.0.0.1:1/0"}
        failed = subprocess.run(
            [sys.executable, "-m", "modelq", "submit", "echo", "--input", "{}"],
            env=down,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert failed.returncode != 0
        seen.append(failed.stdout + failed.stderr)
    finally:
        stop_process(worker)
    seen.append(log.read_text(errors="replace"))
    assert seen and all(PASSWORD not in text for text in seen), [t[:300] for t in seen if PASSWORD in t]
    assert any("**" in text for text in seen)  # the URLs are shown, masked
    app.modelq.store.dispose()


def test_model_source_rules(tmp_path: Path) -> None:
    """The rules of modelq.models.sources on their own (the API and worker tests are in test_embed_rerank)."""
    from modelq.config import load_settings
    from modelq.errors import ModelNotFound
    from modelq.models import sources

    root = tmp_path / "models"
    (root / "org" / "small").mkdir(parents=True)
    (root / "file.bin").write_bytes(b"x")
    (root / "out").symlink_to(tmp_path)
    offline = load_settings(home=tmp_path / "home", model_roots=[root])
    online = load_settings(home=tmp_path / "home", model_roots=[root], allow_hub_models=True)
    assert sources.resolve("org/small", offline) == str(root / "org" / "small")  # under a root wins over a hub id
    assert sources.resolve(str(root / "org" / "small"), offline) == str(root / "org" / "small")
    assert sources.resolve("BAAI/bge-small-en", online) == "BAAI/bge-small-en"
    for name in ("BAAI/bge-small-en", "file.bin", "out", "out/models", "org/../../home", "", "/", str(root), "a\x00b"):
        with pytest.raises(ModelNotFound, match="MODELQ_MODEL_ROOTS"):
            sources.resolve(name, offline)
    for name in ("../etc", "./x", "/etc/passwd", "a/b/c", "org/small\n"):  # not hub ids either
        with pytest.raises(ModelNotFound):
            sources.resolve(name, online)
    default = load_settings(home=tmp_path / "home")
    assert default.model_root_dirs == [(tmp_path / "home" / "models").resolve()]

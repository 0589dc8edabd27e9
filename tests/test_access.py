"""API keys and owners: a key's jobs are its owner's alone; no key, no API beyond loopback.

The API runs for real (uvicorn in a thread) over the embedded broker with a worker, and is
called with httpx, the modelq client, the ``openai`` client and the ``modelq`` command.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import child_env, free_port, start_worker, stop_process, wait_for, wait_for_worker
from modelq.testing import serving

ALICE_KEY = "mq_alice-test-key-0123456789abcdefghijklmnopqrstuv"
BOB_KEY = "mq_bob-test-key-0123456789abcdefghijklmnopqrstuvwxy"


def _keys_env() -> str:
    from modelq.access import hash_key

    return json.dumps({"alice": [hash_key(ALICE_KEY)], "bob": hash_key(BOB_KEY)})


@pytest.fixture(scope="module")
def api_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The API with two owners' keys, over the embedded broker and one worker."""
    from modelq.api import create_api
    from modelq.broker import EmbeddedRedis
    from modelq.celery_app import create_celery_app
    from modelq.config import load_settings

    home = tmp_path_factory.mktemp("access") / "home"
    settings = load_settings(home=home, imports=["modelq_test_tasks"], api_keys=json.loads(_keys_env()))
    app = create_celery_app(settings, start_broker=True)
    app.modelq.store  # noqa: B018 - migrate before the worker starts
    worker = start_worker({"MODELQ_HOME": str(home)}, "default", "access@%h")
    try:
        wait_for_worker(app, "access@")
        with serving(create_api(settings, celery_app=app)) as url:
            yield url
    finally:
        stop_process(worker)
        EmbeddedRedis(home).stop()


def _as(url: str, key: str | None, **headers: str) -> httpx.Client:
    if key is not None:
        headers = {"Authorization": f"Bearer {key}", **headers}
    return httpx.Client(base_url=url, headers=headers, timeout=60)


def test_a_request_without_a_valid_key_is_401_and_says_how_to_send_one(api_url: str) -> None:
    with _as(api_url, None) as anonymous, _as(api_url, "mq_not-a-key") as stranger:
        # given no key, then every job endpoint answers 401 with a message that says what to send
        response = anonymous.post("/v1/jobs", json={"task": "echo", "input": {}})
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert "Authorization: Bearer <key>" in response.json()["message"]
        for path in ("/v1/jobs", "/v1/models", "/v1/cluster", "/metrics", "/v1/tasks"):
            assert anonymous.get(path).status_code == 401, path
        # a wrong key is refused too, and nothing was recorded for either
        response = stranger.get("/v1/jobs")
        assert response.status_code == 401 and "not valid" in response.json()["message"]
        # while probes, the API's description and the UI's files stay open (the UI asks for the key)
        for path in ("/healthz", "/openapi.json", "/ui/", "/ui/js/app.js"):
            assert anonymous.get(path).status_code == 200, path
    with _as(api_url, ALICE_KEY) as alice:
        assert alice.get("/v1/jobs").json()["total"] == 0


def test_each_owner_sees_only_their_own_jobs_events_and_artifacts(api_url: str) -> None:
    with _as(api_url, ALICE_KEY) as alice, _as(api_url, BOB_KEY) as bob:
        # given a job of alice's that made an artifact
        job = alice.post("/v1/jobs", json={"task": "tests.artifact", "input": {"text": "alice's secret"}}).json()
        done = alice.get(f"/v1/jobs/{job['id']}", params={"wait": 30})
        assert done.status_code == 200 and done.json()["status"] == "succeeded"
        assert alice.get(f"/v1/jobs/{job['id']}/artifacts/note.txt").text == "alice's secret"
        # then to bob it does not exist: the record, its events, its artifact, a cancel, the list
        for method, path in [
            ("GET", f"/v1/jobs/{job['id']}"),
            ("GET", f"/v1/jobs/{job['id']}/events"),
            ("GET", f"/v1/jobs/{job['id']}/artifacts/note.txt"),
            ("DELETE", f"/v1/jobs/{job['id']}"),
        ]:
            response = bob.request(method, path)
            assert response.status_code == 404, (method, path, response.text)
            assert response.json()["error"] in ("JobNotFound", "ArtifactNotFound")
        assert job["id"] not in [j["id"] for j in bob.get("/v1/jobs").json()["jobs"]]
        assert job["id"] in [j["id"] for j in alice.get("/v1/jobs").json()["jobs"]]
        # and the same idempotency key is each owner's own: bob's is a new job
        body = {"task": "echo", "input": {"n": 1}, "idempotency_key": "shared-key"}
        first, again = alice.post("/v1/jobs", json=body), alice.post("/v1/jobs", json=body)
        bobs = bob.post("/v1/jobs", json=body)
        assert first.json()["id"] == again.json()["id"] != bobs.json()["id"]


def test_each_owner_sees_only_their_own_counts_of_waiting_and_running_jobs(api_url: str, tmp_path: Path) -> None:
    with _as(api_url, ALICE_KEY) as alice, _as(api_url, BOB_KEY) as bob:
        # given jobs of bob's and then one of alice's on "cpu", which no worker here reads: a window of
        # bob's on the broker, the rest held for their turn
        jobs = [
            bob.post("/v1/jobs", json={"task": "tests.touch", "input": {"path": str(tmp_path / f"b{i}")}}).json()
            for i in range(6)
        ]
        jobs.append(alice.post("/v1/jobs", json={"task": "tests.touch", "input": {"path": str(tmp_path / "a")}}).json())
        try:
            # then each owner sees their own counts, and nobody else's
            assert alice.get("/v1/owners").json() == {
                "owners": [{"owner": "alice", "queued": 1, "held": 1, "running": 0, "weight": 1.0}]
            }
            assert bob.get("/v1/owners").json() == {
                "owners": [{"owner": "bob", "queued": 6, "held": 2, "running": 0, "weight": 1.0}]
            }
        finally:
            for job in jobs:
                (alice if job is jobs[-1] else bob).delete(f"/v1/jobs/{job['id']}")


def test_the_key_is_read_from_x_api_key_and_the_ui_cookie(api_url: str) -> None:
    with _as(api_url, None, **{"X-API-Key": ALICE_KEY}) as by_header:
        assert by_header.get("/v1/jobs").status_code == 200
    with httpx.Client(base_url=api_url, cookies={"modelq_api_key": ALICE_KEY}, timeout=30) as by_cookie:
        assert by_cookie.get("/v1/jobs").status_code == 200
    with httpx.Client(base_url=api_url, headers={"Cookie": 'modelq_api_key="unterminated'}, timeout=30) as broken:
        assert broken.get("/v1/jobs").status_code == 401


def test_python_client_and_openai_client_send_the_key(api_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import openai

    from modelq.client import Client
    from modelq.errors import JobNotFound, Unauthorized

    # the modelq client takes the key as an argument or from MODELQ_API_KEY
    with Client(api_url, api_key=ALICE_KEY) as alice:
        job = alice.submit("echo", {"from": "alice"})
        assert alice.wait(job["id"], timeout=30)["result"] == {"from": "alice"}
    monkeypatch.setenv("MODELQ_API_KEY", BOB_KEY)
    with Client(api_url) as bob:
        with pytest.raises(JobNotFound):
            bob.get(job["id"])
    monkeypatch.delenv("MODELQ_API_KEY")
    with Client(api_url) as nobody, pytest.raises(Unauthorized, match="needs a key"):
        nobody.get(job["id"])
    # the openai client meets the 401 as its own AuthenticationError
    client = openai.OpenAI(base_url=f"{api_url}/v1", api_key="mq_wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.embeddings.create(model="all-MiniLM-L6-v2", input="hello")


def test_cli_submits_with_modelq_api_key(api_url: str, tmp_path: Path) -> None:
    def submit(key: str | None) -> subprocess.CompletedProcess:
        env = child_env(MODELQ_HOME=str(tmp_path / "home"), **({"MODELQ_API_KEY": key} if key else {}))
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "modelq",
                "submit",
                "echo",
                "-i",
                '{"a": 1}',
                "--url",
                api_url,
                "--wait",
                "--timeout",
                "60",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )

    ok = submit(ALICE_KEY)
    assert ok.returncode == 0 and json.loads(ok.stdout) == {"a": 1}, ok.stderr
    refused = submit(None)
    assert refused.returncode == 6
    assert refused.stderr.strip().splitlines() == [
        "modelq: error: this API needs a key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
    ]


# Without keys: loopback only ----------------------------------------------------------------


def _modelq(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "modelq", *args],
        capture_output=True,
        text=True,
        env=child_env(**env),
        cwd=cwd,
        timeout=60,
    )


@pytest.mark.parametrize("command", ["api", "up"])
def test_without_keys_the_api_refuses_a_public_address(tmp_path: Path, command: str) -> None:
    result = _modelq(
        command, "--host", "0.0.0.0", "--port", str(free_port()), env={"MODELQ_HOME": str(tmp_path / "h")}, cwd=tmp_path
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "refusing to serve the API on 0.0.0.0 with no API keys configured" in lines[0]
    assert "modelq keys new OWNER" in lines[0]


def test_with_keys_the_api_serves_a_public_address_and_says_keys_are_required(tmp_path: Path) -> None:
    port = free_port()
    env = child_env(MODELQ_HOME=str(tmp_path / "home"), MODELQ_API_KEYS=_keys_env())
    proc = subprocess.Popen(
        [sys.executable, "-m", "modelq", "api", "--host", "0.0.0.0", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        def answer() -> httpx.Response | None:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/v1/jobs", timeout=5)
            except httpx.TransportError:
                return None

        assert wait_for(answer, timeout=60, interval=0.2, what="modelq api to answer").status_code == 401
        ok = httpx.get(f"http://127.0.0.1:{port}/v1/jobs", headers={"Authorization": f"Bearer {BOB_KEY}"}, timeout=10)
        assert ok.status_code == 200
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert "access: API keys required (2 owner(s): alice, bob)" in out


def test_keys_new_prints_a_key_whose_hash_configures_it(tmp_path: Path) -> None:
    from modelq.access import KeyRing
    from modelq.config import load_settings

    made = _modelq("keys", "new", "carol", "--json", env={}, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    key = json.loads(made.stdout)
    assert key["key"].startswith("mq_") and key["hash"].startswith("sha256:")
    settings = load_settings(api_keys={"carol": [key["hash"]]})
    assert KeyRing(settings.api_keys).owner_of(key["key"]) == "carol"
    hashed = subprocess.run(
        [sys.executable, "-m", "modelq", "keys", "hash"],
        input=key["key"] + "\n",
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=60,
    )
    assert hashed.stdout.strip() == key["hash"]
    # a key pasted into the configuration as it is (not its hash) is refused at start, by name
    bad = _modelq("keys", "list", env={"MODELQ_API_KEYS": json.dumps({"carol": key["key"]})}, cwd=tmp_path)
    assert bad.returncode == 5
    assert "MODELQ_API_KEYS" in bad.stderr and "never the keys themselves" in bad.stderr
    listed = _modelq("keys", "list", env={"MODELQ_API_KEYS": json.dumps({"carol": key["hash"]})}, cwd=tmp_path)
    assert listed.stdout.split() == ["carol", "1", "key(s)"]


def test_the_cluster_view_hides_other_owners_job_ids(api_url: str, tmp_path: Path) -> None:
    with _as(api_url, ALICE_KEY) as alice, _as(api_url, BOB_KEY) as bob:
        # given a job of alice's that is running
        job = alice.post(
            "/v1/jobs", json={"task": "tests.slow_count", "input": {"path": str(tmp_path / "n"), "seconds": 8}}
        ).json()

        def running_in(view: dict) -> list[dict]:
            return [t for w in view["workers"] for t in w["active"] if t["task"] == "tests.slow_count"]

        wait_for(lambda: running_in(alice.get("/v1/cluster").json()), timeout=30, what="the job to show as running")
        # then alice sees its id, bob sees that a job runs but not which
        assert [t["id"] for t in running_in(alice.get("/v1/cluster").json())] == [job["id"]]
        assert [t["id"] for t in running_in(bob.get("/v1/cluster").json())] == [None]
        alice.delete(f"/v1/jobs/{job['id']}")

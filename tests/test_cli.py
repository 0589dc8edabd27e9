"""The command line: `modelq up` end to end, submit, status, jobs, purge, and errors as one line."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from conftest import Backend, child_env, free_port, wait_for


def modelq(*args: str, env: dict[str, str], cwd: Path, timeout: float = 120, input: str | None = None):  # noqa: ANN201
    return subprocess.run(
        [sys.executable, "-m", "modelq", *args],
        capture_output=True,
        text=True,
        env=child_env(**env),
        cwd=cwd,
        timeout=timeout,
        input=input,
    )


def test_up_runs_everything_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    env = child_env(MODELQ_HOME=str(tmp_path / "home"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "modelq", "up", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        # given `modelq up` with nothing configured
        def accepted() -> httpx.Response | None:
            try:
                response = httpx.post(f"{base}/v1/jobs", json={"task": "echo", "input": {"x": 1}}, timeout=5)
            except httpx.TransportError:
                return None
            return response

        response = wait_for(accepted, timeout=60, interval=0.1, what="modelq up to accept a job")
        # then a job is accepted at once and finished by its workers
        assert response.status_code == 202
        done = httpx.get(f"{base}/v1/jobs/{response.json()['id']}", params={"wait": 30}, timeout=40)
        assert done.status_code == 200 and done.json()["result"] == {"x": 1}
        # and Celery's own CLI reaches its workers
        ping = subprocess.run(
            [sys.executable, "-m", "celery", "-A", "modelq", "inspect", "ping", "--timeout", "5"],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=60,
        )
        assert "default@" in ping.stdout and "io@" in ping.stdout, ping.stdout + ping.stderr
        assert httpx.get(f"{base}/readyz", timeout=10).status_code == 200
        # and so does Flower, on loopback
        _flower_lists_the_workers(env, tmp_path)
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    # when Ctrl-C is pressed, everything stops: the API, the workers and the broker it started
    assert proc.returncode == 0, err
    assert f"modelq is up: http://127.0.0.1:{port}" in out
    assert "no API keys configured, so the API listens on 127.0.0.1 (loopback) only" in out
    assert "modelq stopped." in out
    from modelq.broker import EmbeddedRedis

    assert not EmbeddedRedis(tmp_path / "home").ping()
    leftover = subprocess.run(["pgrep", "-f", f"MODELQ_HOME={tmp_path}"], capture_output=True, text=True)
    assert leftover.stdout == ""


def _flower_lists_the_workers(env: dict[str, str], cwd: Path) -> None:
    port = free_port()
    flower = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "modelq", "flower", "--address=127.0.0.1", f"--port={port}"],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def workers_page() -> str:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/workers", timeout=5).text
            except httpx.TransportError:
                return ""

        wait_for(lambda: "default@" in workers_page(), timeout=60, interval=0.2, what="Flower to list the workers")
    finally:
        flower.terminate()
        flower.wait(timeout=30)


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
def test_submit_wait_status_jobs(backend: Backend, tmp_path: Path) -> None:
    result = modelq(
        "submit", "echo", "--input", '{"hello": "cli"}', "--wait", "--timeout", "60", env=backend.env, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"hello": "cli"}

    (tmp_path / "in.json").write_text('{"message": "from a file"}')
    failed = modelq("submit", "tests.fail", "--input", "@in.json", "--wait", env=backend.env, cwd=tmp_path)
    assert failed.returncode == 1
    assert json.loads(failed.stdout)["error"] == "ValueError: from a file"

    queued = json.loads(modelq("submit", "echo", env=backend.env, cwd=tmp_path).stdout)
    assert queued["status"] == "queued"

    status = json.loads(modelq("status", "--json", env=backend.env, cwd=tmp_path).stdout)
    # every configured queue, and any other queue with jobs (per-model ones), each with its details
    assert {"default", "cpu", "gpu", "io"} <= set(status["queues"])
    assert {row["queue"] for row in status["queue_details"]} == set(status["queues"])
    assert status["jobs"]["succeeded"] >= 1 and status["jobs"]["failed"] >= 1
    assert any(w.startswith("contract-embedded@") for w in status["workers"])

    listing = json.loads(modelq("jobs", "--json", "--task", "tests.fail", env=backend.env, cwd=tmp_path).stdout)
    assert listing["total"] >= 1 and listing["jobs"][0]["status"] == "failed"


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
def test_inspect_draws_tables_and_json(backend: Backend, tmp_path: Path) -> None:
    # given a job running on the worker
    job_id = backend.client.submit("sleep", {"seconds": 20, "steps": 40})["id"]
    wait_for(lambda: backend.client.get(job_id)["status"] == "running", timeout=30, what="the sleep job to start")
    try:
        active = modelq("inspect", "active", "--timeout", "3", env=backend.env, cwd=tmp_path, timeout=60)
        # then the table names the job, its task and its queue
        assert active.returncode == 0, active.stderr
        assert "sleep" in active.stdout and job_id[:8] in active.stdout and "default" in active.stdout
        replies = json.loads(
            modelq("inspect", "active", "--json", "--timeout", "3", env=backend.env, cwd=tmp_path).stdout
        )
        assert [job["id"] for jobs in replies.values() for job in jobs] == [job_id]
        queues = modelq("inspect", "active-queues", "--timeout", "3", env=backend.env, cwd=tmp_path)
        assert "contract-embedded@" in queues.stdout and "default" in queues.stdout
        registered = modelq("inspect", "registered", "--timeout", "3", env=backend.env, cwd=tmp_path)
        assert "echo" in registered.stdout and "tests.fail" in registered.stdout
        stats = modelq("inspect", "stats", "--timeout", "3", env=backend.env, cwd=tmp_path)
        assert "prefork" in stats.stdout and "concurrency" in stats.stdout
    finally:
        backend.client.cancel(job_id)


def test_inspect_without_workers_says_so(tmp_path: Path, home: Path) -> None:
    env = {"MODELQ_HOME": str(home)}
    # no broker running at all: one line that says so
    result = modelq("inspect", "ping", "--timeout", "0.5", env=env, cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0 and len(lines) == 1 and "embedded broker" in lines[0] and "not running" in lines[0], (
        result.stderr
    )
    # a broker but no worker
    modelq("submit", "echo", env=env, cwd=tmp_path)  # starts the embedded broker, as any command that sends does
    result = modelq("inspect", "ping", "--timeout", "0.5", env=env, cwd=tmp_path)
    assert result.returncode != 0 and result.stderr.strip() == "no worker answered"


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
def test_monitor_serves_flower_behind_a_login(backend: Backend, tmp_path: Path) -> None:
    port = free_port()
    flower = subprocess.Popen(
        [sys.executable, "-m", "modelq", "monitor", "--port", str(port), "--basic-auth", "ops:s3cret"],
        env=child_env(**backend.env),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def workers() -> dict | None:
            try:
                response = httpx.get(f"{base}/api/workers", params={"refresh": 1}, auth=("ops", "s3cret"), timeout=10)
            except httpx.TransportError:
                return None
            return response.json() if response.status_code == 200 and response.json() else None

        # then Flower's API sees the worker and the queue it consumes
        replies = wait_for(workers, timeout=60, interval=0.3, what="Flower to list the workers")
        name = next(n for n in replies if n.startswith("contract-embedded@"))
        assert "default" in {q["name"] for q in replies[name]["active_queues"]}
        # and the modelq jobs it runs, from task events
        job_id = backend.client.submit("echo", {"seen": "by flower"})["id"]

        def task_seen() -> dict | None:
            tasks = httpx.get(f"{base}/api/tasks", auth=("ops", "s3cret"), timeout=10).json()
            return tasks.get(job_id) if tasks.get(job_id, {}).get("state") == "SUCCESS" else None

        assert wait_for(task_seen, timeout=60, interval=0.3, what="Flower to see the job")["name"] == "echo"
        # and nobody without the login gets in
        assert httpx.get(f"{base}/api/workers", timeout=10).status_code == 401
    finally:
        flower.terminate()
        flower.wait(timeout=30)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["monitor", "--address", "0.0.0.0"], "refusing to serve Flower on 0.0.0.0 without authentication"),
        (["monitor"], "pass --basic-auth user:password, or --insecure"),
        (["monitor", "--basic-auth", "nopassword"], "must be user:password"),
    ],
)
def test_monitor_refuses_to_run_open(tmp_path: Path, args: list[str], message: str) -> None:
    result = modelq(*args, env={"MODELQ_HOME": str(tmp_path / "home")}, cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["submit", "echo", "--input", "{nope"], 2, "--input is not valid JSON"),
        (["submit", "echo", "--input", "[1]"], 2, "--input must be a JSON object"),
        (["submit", "no.such.task"], 2, "unknown task 'no.such.task'"),
        (["submit", "echo", "--input", "@missing.json"], 2, "input file 'missing.json' does not exist"),
        (["purge", "-Q", "imaging", "--yes"], 5, "unknown queue 'imaging'"),
    ],
)
def test_errors_are_one_readable_line(tmp_path: Path, home: Path, args: list[str], code: int, message: str) -> None:
    result = modelq(*args, env={"MODELQ_HOME": str(home)}, cwd=tmp_path)
    assert result.returncode == code
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_purge_empties_a_queue_and_cancels_its_jobs(tmp_path: Path, home: Path) -> None:
    env = {"MODELQ_HOME": str(home)}
    # no worker consumes cpu here: the jobs wait
    ids = [
        json.loads(
            modelq(
                "submit", "tests.touch", "--input", json.dumps({"path": str(tmp_path / f"f{n}")}), env=env, cwd=tmp_path
            ).stdout
        )["id"]
        for n in range(3)
    ]
    assert json.loads(modelq("status", "--json", env=env, cwd=tmp_path).stdout)["queues"]["cpu"] == 3
    refused = modelq("purge", "-Q", "cpu", env=env, cwd=tmp_path, input="n\n")
    assert refused.returncode != 0 and "Aborted" in refused.stderr
    done = modelq("purge", "-Q", "cpu", "--yes", env=env, cwd=tmp_path)
    assert "purged 3 message(s)" in done.stdout and "3 queued job(s) marked cancelled" in done.stdout
    assert json.loads(modelq("status", "--json", env=env, cwd=tmp_path).stdout)["queues"]["cpu"] == 0
    job = json.loads(modelq("get", ids[0], env=env, cwd=tmp_path).stdout)
    assert job["status"] == "cancelled" and "purged" in job["error"]


def test_local_fallback_runs_the_job_when_no_worker_answers(home: Path) -> None:
    from modelq.client import Client
    from modelq.config import load_settings

    settings = load_settings(home=home, fallback="local", fallback_timeout=0.3, imports=["modelq_test_tasks"])
    client = Client.in_process(settings)
    job = client.submit("echo", {"offline": True})
    assert job["runner"] == "local"
    done = client.wait(job["id"], timeout=30)
    assert done["status"] == "succeeded" and done["result"] == {"offline": True} and done["runner"] == "local"


def test_readyz_is_503_without_a_worker(home: Path) -> None:
    from fastapi.testclient import TestClient

    from modelq.api import create_api
    from modelq.config import load_settings

    with TestClient(create_api(load_settings(home=home)), base_url="http://localhost") as http:
        ready = http.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["broker"]["ok"] and ready.json()["checks"]["database"]["ok"]
        assert ready.json()["checks"]["workers"] == {"ok": False, "error": "no worker answered a ping"}
        # jobs are still accepted; they wait for a worker
        assert http.post("/v1/jobs", json={"task": "echo", "input": {}}).status_code == 202


@pytest.mark.parametrize(
    ("gpus", "message"), [("0,x", "expected 'all' or GPU indices"), ("1,1", "a GPU is named twice")]
)
def test_worker_gpus_must_name_gpus(tmp_path: Path, home: Path, gpus: str, message: str) -> None:
    result = modelq("worker", "-Q", "gpu", "--gpus", gpus, env={"MODELQ_HOME": str(home)}, cwd=tmp_path)
    assert result.returncode == 5
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_worker_per_gpu_pins_each_process_to_its_gpu(tmp_path: Path, home: Path) -> None:
    from modelq.bench.support import descendants
    from modelq.broker import EmbeddedRedis
    from modelq.celery_app import create_celery_app
    from modelq.config import load_settings

    # when a worker is started for GPUs 0 and 3 (none needs to exist to start the processes)
    parent = subprocess.Popen(
        [sys.executable, "-m", "modelq", "worker", "-Q", "gpu", "--gpus", "0,3", "-l", "WARNING"],
        env=child_env(MODELQ_HOME=str(home)),
        cwd=tmp_path,
    )
    app = create_celery_app(load_settings(home=home), start_broker=True)
    try:
        # then one worker per GPU answers, named after its GPU
        def names() -> set[str]:
            replies = app.control.ping(timeout=0.5) or []
            return {name.split("@")[0] for reply in replies for name in reply}

        wait_for(lambda: names() == {"gpu0", "gpu3"}, timeout=60, what="workers gpu0@ and gpu3@ to answer")
        # and each process sees only its own GPU
        pinned = set()
        for pid, _ in descendants(parent.pid):
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if b"worker" in argv:
                pinned.add(
                    (
                        argv[argv.index(b"--hostname") + 1].decode(),
                        next(e for e in environ if e.startswith(b"CUDA_VISIBLE_DEVICES=")).decode(),
                    )
                )
        assert pinned == {("gpu0@%h", "CUDA_VISIBLE_DEVICES=0"), ("gpu3@%h", "CUDA_VISIBLE_DEVICES=3")}
        # and SIGTERM to the parent stops them all
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=60) == 0
    finally:
        if parent.poll() is None:
            parent.kill()
        EmbeddedRedis(home).stop()

"""The HTTP API, served by a real uvicorn server, over the embedded broker and a real worker."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from conftest import Backend, wait_for
from modelq.client import Client
from modelq.errors import InvalidInput, JobFailed, JobNotFound, TaskNotFound
from modelq.testing import serving

pytestmark = pytest.mark.parametrize("backend", ["embedded"], indirect=True)


@pytest.fixture
def api_url(backend: Backend) -> Iterator[str]:
    from modelq.api import create_api
    from modelq.config import load_settings

    settings = load_settings(
        home=backend.home, broker_url=backend.settings.broker_url, imports=["modelq_test_tasks"], max_request_bytes=4096
    )
    with serving(create_api(settings, celery_app=backend.app)) as url:
        yield url


@pytest.fixture
def http(api_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api_url, timeout=60) as client:
        yield client


def test_an_interactive_job_is_recorded_with_the_top_priority(http: httpx.Client) -> None:
    response = http.post("/v1/jobs", json={"task": "echo", "input": {"x": 1}, "priority": "interactive"})
    assert response.status_code == 202 and response.json()["priority"] == 9
    batch = http.post("/v1/jobs", json={"task": "echo", "input": {"x": 1}, "priority": "batch"})
    assert batch.status_code == 202 and batch.json()["priority"] is None


def test_submit_then_get_answers_202_then_200(http: httpx.Client) -> None:
    response = http.post("/v1/jobs", json={"task": "echo", "input": {"x": 1}})
    assert response.status_code == 202
    job_id = response.json()["id"]
    # long-poll until finished
    done = http.get(f"/v1/jobs/{job_id}", params={"wait": 20})
    assert done.status_code == 200
    assert done.json()["status"] == "succeeded" and done.json()["result"] == {"x": 1}


def test_running_job_answers_202_with_progress(http: httpx.Client) -> None:
    job_id = http.post("/v1/jobs", json={"task": "sleep", "input": {"seconds": 2, "steps": 20}}).json()["id"]
    running = wait_for(
        lambda: (r := http.get(f"/v1/jobs/{job_id}")).json()["progress"]["fraction"] > 0 and r,
        timeout=30,
        what="progress",
    )
    assert running.status_code == 202 and running.json()["status"] == "running"
    assert http.get(f"/v1/jobs/{job_id}", params={"wait": 20}).status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"task": "nope", "input": {}}, 404, "unknown task 'nope'"),
        ({"task": "echo", "input": [1, 2]}, 422, "input: Input should be a valid dictionary"),
        ({"task": "sleep", "input": {"colour": "red"}}, 422, "unexpected keyword argument 'colour'"),
        (
            {"task": "echo", "input": {}, "priority": 99},
            422,
            "priority: must be a number from 0 (lowest) to 9 (highest), 'interactive' or 'batch'; got 99",
        ),
        ({"task": "echo", "input": {}, "priority": "urgent"}, 422, "'interactive' or 'batch'; got 'urgent'"),
        ({"task": "echo", "inputs": {}}, 422, "inputs: Extra inputs are not permitted"),
        ({"input": {}}, 422, "task: Field required"),
    ],
)
def test_bad_requests_get_a_4xx_that_says_what_to_fix(
    http: httpx.Client, body: dict, status: int, message: str
) -> None:
    response = http.post("/v1/jobs", json=body)
    assert response.status_code == status
    assert message in response.json()["message"]


def test_malformed_json_is_422(http: httpx.Client) -> None:
    response = http.post("/v1/jobs", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert "JSON decode error" in response.json()["message"]


@pytest.mark.parametrize(
    ("method", "path", "body", "content_type", "status", "error", "message"),
    [
        # JSON that Python parses but nothing downstream can carry: refused, not stored (or a 500)
        (
            "POST",
            "/v1/jobs",
            b'{"task": "echo", "input": {"x": NaN}}',
            "application/json",
            422,
            "InvalidInput",
            "x is nan: JSON numbers are finite",
        ),
        (
            "POST",
            "/v1/jobs",
            b'{"task": "echo", "input": {"x": [Infinity]}}',
            "application/json",
            422,
            "InvalidInput",
            "x[0] is inf",
        ),
        (
            "POST",
            "/v1/jobs",
            b'{"task": "echo", "input": {"x": "\\ud800"}}',
            "application/json",
            422,
            "InvalidInput",
            "x is not valid Unicode (a lone surrogate",
        ),
        ("POST", "/v1/jobs", b'{"task": "\\ud800"}', "application/json", 422, "InvalidInput", "task: "),
        # a JSON body sent as text: pydantic's error carries the raw bytes, which must not become a 500
        ("POST", "/v1/jobs", b'{"task": "echo"}', "text/plain", 422, "InvalidInput", "body: "),
        ("GET", "/v1/jobs?offset=9223372036854775808", None, None, 422, "InvalidInput", "query.offset"),
        # FastAPI's and Starlette's own refusals come in the same shape as ours
        (
            "POST",
            "/v1/documents",
            b"--x\r\n[None]--x--\r\n",
            "multipart/form-data; boundary=x",
            400,
            "BadRequest",
            "multipart",
        ),
        ("GET", "/nope", None, None, 404, "NotFound", "Not Found"),
        ("DELETE", "/v1/tasks", None, None, 405, "MethodNotAllowed", "Method Not Allowed"),
    ],
)
def test_odd_requests_get_a_4xx_in_the_error_shape(
    http: httpx.Client,
    method: str,
    path: str,
    body: bytes | None,
    content_type: str | None,
    status: int,
    error: str,
    message: str,
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = http.request(method, path, content=body, headers=headers)
    assert response.status_code == status, response.text
    assert response.json()["error"] == error and message in response.json()["message"]


def test_the_schema_documents_our_error_body(http: httpx.Client) -> None:
    spec = http.get("/openapi.json").json()
    error = {"$ref": "#/components/schemas/ErrorOut"}
    submit = spec["paths"]["/v1/jobs"]["post"]["responses"]
    bodies = {
        status: submit[status]["content"]["application/json"]["schema"]
        for status in ("400", "404", "413", "422", "429")
    }
    assert bodies == dict.fromkeys(bodies, error)
    assert "HTTPValidationError" not in spec["components"]["schemas"]


def test_body_over_the_limit_is_413(http: httpx.Client) -> None:
    big = {"task": "echo", "input": {"blob": "x" * 5000}}
    response = http.post("/v1/jobs", json=big)
    assert response.status_code == 413
    assert "4096 bytes" in response.json()["message"]
    # streamed without a Content-Length, too
    chunks = iter([json.dumps(big).encode()[i : i + 1000] for i in range(0, 6000, 1000)])
    response = http.post("/v1/jobs", content=chunks, headers={"content-type": "application/json"})
    assert response.status_code == 413
    # and the API still serves the next request
    assert http.post("/v1/jobs", json={"task": "echo", "input": {}}).status_code == 202


def test_unknown_job_and_artifact_are_404(http: httpx.Client) -> None:
    assert http.get("/v1/jobs/does-not-exist").status_code == 404
    assert "not found" in http.get("/v1/jobs/does-not-exist").json()["message"]
    job_id = http.post("/v1/jobs", json={"task": "tests.artifact", "input": {"text": "png bytes"}}).json()["id"]
    http.get(f"/v1/jobs/{job_id}", params={"wait": 20})
    assert http.get(f"/v1/jobs/{job_id}/artifacts/note.txt").content == b"png bytes"
    assert http.get(f"/v1/jobs/{job_id}/artifacts/missing.png").status_code == 404
    assert http.get(f"/v1/jobs/{job_id}/artifacts/..%2Fjobs.db").status_code in (404, 422)


def test_list_filters_and_pages(http: httpx.Client) -> None:
    ids = [
        http.post("/v1/jobs", json={"task": "tests.count", "input": {"path": "/dev/null"}}).json()["id"]
        for _ in range(3)
    ]
    page = http.get("/v1/jobs", params={"task": "tests.count", "limit": 2}).json()
    assert page["total"] >= 3 and len(page["jobs"]) == 2
    assert page["jobs"][0]["id"] == ids[-1]  # newest first
    assert http.get("/v1/jobs", params={"status": "bogus"}).status_code == 422
    assert http.get("/v1/jobs", params={"limit": 0}).status_code == 422


def test_delete_cancels_a_running_job(http: httpx.Client) -> None:
    job_id = http.post("/v1/jobs", json={"task": "sleep", "input": {"seconds": 60, "steps": 600}}).json()["id"]
    wait_for(lambda: http.get(f"/v1/jobs/{job_id}").json()["status"] == "running", timeout=30, what="running")
    assert http.delete(f"/v1/jobs/{job_id}").json()["status"] == "cancelled"
    assert http.get(f"/v1/jobs/{job_id}").status_code == 200


def test_events_stream_progress_until_the_end(http: httpx.Client) -> None:
    job_id = http.post("/v1/jobs", json={"task": "sleep", "input": {"seconds": 1.5, "steps": 6}}).json()["id"]
    events: list[tuple[str, dict]] = []
    with http.stream("GET", f"/v1/jobs/{job_id}/events") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[len("data: ") :])))
    kinds = [name for name, _ in events]
    assert kinds[-1] == "end" and events[-1][1]["status"] == "succeeded"
    fractions = [data["progress"]["fraction"] for name, data in events if name == "job"]
    assert fractions == sorted(fractions)
    assert any(0 < f < 1 for f in fractions) and fractions[-1] == 1.0


def test_health_ready_and_docs(http: httpx.Client) -> None:
    assert http.get("/healthz").json() == {"status": "ok"}
    ready = http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["workers"]["ok"]
    spec = http.get("/openapi.json").json()
    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/events"} <= set(spec["paths"])
    assert "echo" in {t["name"] for t in http.get("/v1/tasks").json()}


def test_python_client_over_http(api_url: str) -> None:
    with Client(api_url) as client:
        assert client.run("echo", {"via": "http"}, timeout=30) == {"via": "http"}
        with pytest.raises(JobFailed, match="ValueError: nope"):
            client.run("tests.fail", {"message": "nope"}, timeout=30)
        with pytest.raises(JobNotFound):
            client.get("missing")
        with pytest.raises(TaskNotFound, match="unknown task 'nope'; registered tasks: "):
            client.submit("nope")
        with pytest.raises(InvalidInput) as info:
            client.submit("sleep", {"colour": "red"})
        assert info.value.field == "input"
        same = client.submit("echo", {}, idempotency_key="http-key")
        assert client.submit("echo", {}, idempotency_key="http-key")["id"] == same["id"]


def test_a_full_queue_answers_429_with_retry_after(backend: Backend, tmp_path) -> None:  # noqa: ANN001
    from modelq.api import create_api
    from modelq.celery_app import create_celery_app
    from modelq.config import load_settings

    waiting = backend.app.modelq.store.backlog("cpu").get("cpu", (0, None))[0]
    queues = {name: cfg.model_dump() for name, cfg in backend.settings.queues.items()}
    queues["cpu"]["max_queued"] = waiting + 2  # nobody consumes cpu here: jobs wait
    settings = load_settings(home=backend.home, imports=["modelq_test_tasks"], queues=queues, queue_full_retry_after=7)
    app = create_celery_app(settings)
    with serving(create_api(settings, celery_app=app)) as url:
        with httpx.Client(base_url=url, timeout=30) as http:
            submit = lambda n: http.post("/v1/jobs", json={"task": "tests.touch", "input": {"path": str(tmp_path / n)}})  # noqa: E731
            accepted = [submit(str(n)) for n in range(2)]
            assert [r.status_code for r in accepted] == [202, 202]
            refused = submit("over")
            # then the third waits its turn: 429, a Retry-After, and a message naming the queue and its limit
            assert refused.status_code == 429 and refused.headers["retry-after"] == "7"
            assert refused.json()["error"] == "QueueFull" and "'cpu'" in refused.json()["message"]
            assert f"limit (max_queued) is {waiting + 2}" in refused.json()["message"]
            # and nothing of it was recorded; the other queues still take jobs
            assert (
                http.get("/v1/jobs", params={"task": "tests.touch", "status": "queued"}).json()["total"] == waiting + 2
            )
            assert http.post("/v1/jobs", json={"task": "echo", "input": {}}).status_code == 202
            for response in accepted:
                http.delete(f"/v1/jobs/{response.json()['id']}")


def test_pdf_uploads_have_their_own_body_limit(backend: Backend) -> None:
    from modelq.api import create_api
    from modelq.config import load_settings

    settings = load_settings(
        home=backend.home, imports=["modelq_test_tasks"], max_request_bytes=4096, max_pdf_bytes=64 * 1024
    )
    with serving(create_api(settings, celery_app=backend.app)) as url:
        with httpx.Client(base_url=url, timeout=30) as http:
            # a 20 KB upload is over the general limit but well within the PDF one: it reaches the route
            small = http.post(
                "/v1/documents", files={"file": ("a.pdf", b"%PDF-1.4\n" + b"0" * 20_000, "application/pdf")}
            )
            assert small.status_code != 413, small.text
            # the same bytes as a JSON body elsewhere are refused
            assert http.post("/v1/jobs", content=b"{" + b" " * 20_000 + b"}").status_code == 413
            # past the PDF limit and its framing room: 413 naming the setting to raise
            big = http.post(
                "/v1/documents", files={"file": ("b.pdf", b"%PDF-1.4\n" + b"0" * (2 * 1024 * 1024), "application/pdf")}
            )
            assert big.status_code == 413 and "MODELQ_MAX_PDF_BYTES" in big.json()["message"]

"""The Python client: over HTTP to a modelq API, or in-process for notebooks and tests.

    >>> client = modelq.Client("http://127.0.0.1:8000")
    >>> job = client.submit("echo", {"x": 1})
    >>> client.result(job["id"], timeout=30)
    {'x': 1}

``Client.in_process()`` talks to the broker and job store directly with the same
settings the workers use (no API server needed).
"""

from __future__ import annotations

import os
import time
from typing import Any

from modelq import errors
from modelq.errors import JobFailed, JobTimeout, ModelqError
from modelq.jobs.status import is_finished

#: The longest single long-poll the client asks the API for.
_LONG_POLL_SECONDS = 25.0


class Client:
    """Submit, watch and fetch jobs.

    Args:
        url: base URL of a modelq API, e.g. ``http://127.0.0.1:8000``.
        api_key: sent as ``Authorization: Bearer <key>`` (default: ``MODELQ_API_KEY`` when set).
        timeout: HTTP timeout in seconds for one request.
    """

    def __init__(
        self, url: str = "http://127.0.0.1:8000", *, api_key: str | None = None, timeout: float = 60.0
    ) -> None:
        import httpx

        api_key = api_key or os.environ.get("MODELQ_API_KEY")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
        self._service = None

    @classmethod
    def in_process(cls, settings: Any = None, *, app: Any = None) -> Client:
        """A client that uses the broker and job store directly (no HTTP).

        Args:
            settings: :class:`modelq.Settings` (default: from the environment).
            app: an existing modelq Celery app to use instead.
        """
        from modelq.celery_app import create_celery_app
        from modelq.config import load_settings
        from modelq.jobs.service import JobService

        client = cls.__new__(cls)
        client.url = "in-process"
        client._http = None
        client._service = JobService(app or create_celery_app(settings or load_settings(), start_broker=True))
        return client

    # Jobs ------------------------------------------------------------------------------

    def submit(
        self,
        task: str,
        input: dict[str, Any] | None = None,
        *,
        priority: int | str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Submit a job; returns its record at once (``id``, ``status``, ...)."""
        if self._service is not None:
            return self._service.submit(task, input or {}, priority=priority, idempotency_key=idempotency_key)
        body: dict[str, Any] = {"task": task, "input": input or {}}
        if priority is not None:
            body["priority"] = priority
        if idempotency_key is not None:
            body["idempotency_key"] = idempotency_key
        return self._request("POST", "/v1/jobs", json=body)

    def get(self, job_id: str) -> dict[str, Any]:
        if self._service is not None:
            return self._service.get(job_id)
        return self._request("GET", f"/v1/jobs/{job_id}")

    def wait(self, job_id: str, timeout: float | None = None) -> dict[str, Any]:
        """Block until the job finishes; returns its record (whatever its final status).

        Raises:
            JobTimeout: not finished within ``timeout`` seconds.
        """
        if self._service is not None:
            return self._service.wait(job_id, timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = _LONG_POLL_SECONDS if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                raise JobTimeout(job_id, timeout or 0)
            job = self._request("GET", f"/v1/jobs/{job_id}", params={"wait": min(remaining, _LONG_POLL_SECONDS)})
            if is_finished(job["status"]):
                return job

    def result(self, job_id: str, timeout: float | None = None) -> Any:
        """Wait for the job and return its result.

        Raises:
            JobFailed: the job failed or was cancelled.
        """
        job = self.wait(job_id, timeout)
        if job["status"] != "succeeded":
            raise JobFailed(job_id, job["status"], job.get("error"), job.get("failure"))
        return job["result"]

    def run(self, task: str, input: dict[str, Any] | None = None, *, timeout: float | None = None, **kw: Any) -> Any:
        """Submit a job and return its result (submit + result)."""
        return self.result(self.submit(task, input, **kw)["id"], timeout)

    def cancel(self, job_id: str) -> dict[str, Any]:
        if self._service is not None:
            return self._service.cancel(job_id)
        return self._request("DELETE", f"/v1/jobs/{job_id}")

    def list(self, **filters: Any) -> dict[str, Any]:
        """List jobs, newest first. Filters: status, task, queue, limit, offset."""
        if self._service is not None:
            page = self._service.list(**filters)
            return {"jobs": page.jobs, "total": page.total}
        params = {k: v for k, v in filters.items() if v is not None}
        return self._request("GET", "/v1/jobs", params=params)

    def artifact(self, job_id: str, name: str) -> bytes:
        if self._service is not None:
            return self._service.artifact_path(job_id, name).read_bytes()
        response = self._http.get(f"/v1/jobs/{job_id}/artifacts/{name}")
        _raise_for(response)
        return response.content

    def close(self) -> None:
        if self._http is not None:
            self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, path, **kwargs)
        _raise_for(response)
        return response.json()


def _raise_for(response: Any) -> None:
    """Turn an API error answer into the modelq exception the server raised (same class, same message)."""
    if response.status_code < 400:
        return
    try:
        body = response.json()
    except ValueError:
        body = {"message": response.text}
    message = str(body.get("message") or body.get("detail") or response.text)
    cls = getattr(errors, str(body.get("error", "")), None)
    if not (isinstance(cls, type) and issubclass(cls, ModelqError)):
        cls = ModelqError
        message = f"HTTP {response.status_code}: {message}"
    error = cls.__new__(cls)
    details = {k: v for k, v in body.items() if k not in ("error", "message", "detail")}
    ModelqError.__init__(error, message, **details)
    for key, value in details.items():
        setattr(error, key, value)  # e.g. InvalidInput.field, the way the server had it
    error.http_status = response.status_code
    raise error

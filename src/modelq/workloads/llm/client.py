"""One OpenAI-compatible chat server, called from a worker process's call threads.

``ChatEndpoint.complete(body, timeout)`` makes one ``POST {base_url}/chat/completions`` and
returns a :class:`Completion`, or raises :class:`CallFailed` saying what went wrong and
whether trying again can help.

Connections are pooled per process and shared by every job on that endpoint, in shards of
:data:`SHARD_SIZE`: httpcore's pool looks at every connection it holds each time it hands
one out, so one pool of 500 connections costs O(n) per request. Measured on this project's
2-core machine, 1,000 calls with 500 in flight took 6-12 s of CPU through one pool and 0.8-1.0 s
through shards of 16 (docs/llm.md).
"""

from __future__ import annotations

import itertools
import json
import ssl
import threading
from dataclasses import dataclass
from typing import Any

import httpx

from modelq.errors import ModelqError
from modelq.workloads.llm.retry import is_retryable_status, retry_after_seconds

#: Connections per pool shard; a call thread always uses the same shard.
SHARD_SIZE = 16
#: Longest a TCP (and TLS) connect may take, whatever the call's own timeout.
CONNECT_TIMEOUT = 10.0


class CallFailed(ModelqError):
    """One LLM call failed; ``kind`` says how, ``retryable`` whether another attempt can help."""

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(message, kind=kind, status=status)
        self.kind = kind
        self.status = status
        self.retry_after = retry_after
        self.retryable = retryable

    def as_item_error(self) -> dict[str, Any]:
        """How a failed item reports it in the job result."""
        return {"type": self.kind, "status": self.status, "message": self.message}


@dataclass(frozen=True)
class Completion:
    text: str | None
    usage: dict[str, int] | None
    finish_reason: str | None


class ChatEndpoint:
    """Calls to one server from this process; thread-safe, shared by every job that uses it."""

    def __init__(self, name: str, base_url: str, *, api_key: str | None, max_connections: int) -> None:
        self.name = name
        self.url = base_url.rstrip("/") + "/chat/completions"
        headers = {"content-type": "application/json", "accept": "application/json", "user-agent": "modelq-llm"}
        if api_key:
            headers["authorization"] = f"Bearer {api_key}"
        shards = max(1, -(-max_connections // SHARD_SIZE))
        per_shard = min(SHARD_SIZE, max_connections)
        # One TLS context for all shards: building one per client costs ~1 MB and milliseconds.
        tls = ssl.create_default_context()
        self._clients = [
            httpx.Client(
                headers=headers,
                verify=tls,
                limits=httpx.Limits(max_connections=per_shard, max_keepalive_connections=per_shard),
            )
            for _ in range(shards)
        ]
        self._shard_of_thread = threading.local()
        self._next_shard = itertools.count()

    def _client(self) -> httpx.Client:
        shard = getattr(self._shard_of_thread, "index", None)
        if shard is None:
            shard = self._shard_of_thread.index = next(self._next_shard) % len(self._clients)
        return self._clients[shard]

    def complete(self, body: dict[str, Any], timeout: float) -> Completion:
        """Make one chat completion call.

        Args:
            body: the request (``model``, ``messages``, sampling options).
            timeout: seconds to wait for the answer (a connect gets at most :data:`CONNECT_TIMEOUT`).

        Raises:
            CallFailed: HTTP error status, timeout, connection error or an unreadable answer.
        """
        limits = httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT), pool=None)
        try:
            response = self._client().post(self.url, content=json.dumps(body).encode(), timeout=limits)
        except httpx.TimeoutException as exc:
            raise CallFailed(
                "timeout", f"no answer from {self.name} within {timeout:g}s ({type(exc).__name__})", retryable=True
            ) from None
        except httpx.TransportError as exc:
            raise CallFailed(
                "connection", f"cannot reach {self.name} at {self.url}: {exc or type(exc).__name__}", retryable=True
            ) from None
        if response.status_code != 200:
            raise _http_error(self.name, response)
        try:
            return _parse(response.json())
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise CallFailed(
                "invalid_response", f"{self.name} answered 200 with no usable completion: {exc}", status=200
            ) from None

    def close(self) -> None:
        for client in self._clients:
            client.close()


def _parse(data: Any) -> Completion:
    choice = data["choices"][0]
    message = choice.get("message") or {}
    usage = data.get("usage")
    if isinstance(usage, dict):
        keys = ("prompt_tokens", "completion_tokens", "total_tokens")
        usage = {k: int(v) for k, v in usage.items() if k in keys and isinstance(v, int | float)}
    else:
        usage = None
    return Completion(text=message.get("content"), usage=usage or None, finish_reason=choice.get("finish_reason"))


def _http_error(name: str, response: httpx.Response) -> CallFailed:
    status = response.status_code
    detail = response.text[:300]
    try:
        error = response.json().get("error")
        if isinstance(error, dict) and error.get("message"):
            detail = str(error["message"])[:300]
        elif isinstance(error, str):
            detail = error[:300]
    except (ValueError, AttributeError):
        pass
    if status == 429:
        kind = "rate_limited"
    elif status >= 500:
        kind = "server_error"
    elif status == 408:
        kind = "timeout"
    else:
        kind = "client_error"
    return CallFailed(
        kind,
        f"HTTP {status} from {name}: {detail}".rstrip(": "),
        status=status,
        retry_after=retry_after_seconds(response.headers),
        retryable=is_retryable_status(status),
    )

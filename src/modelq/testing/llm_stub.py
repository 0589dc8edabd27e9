"""A stand-in OpenAI-compatible chat server on loopback, for tests, benchmarks and trying modelq offline.

It speaks just enough of the OpenAI API (``POST /v1/chat/completions``, ``GET /v1/models``)
over real HTTP/1.1 with keep-alive, answers every prompt after a configurable latency, and
can be scripted to fail: a prompt can get a 429 with ``Retry-After``, a 500, or no answer at
all before it succeeds. Every request it receives is recorded (time, body, headers, status),
so a test can see what a worker actually sent and when::

    server = StubLLMServer(latency=0.2).start()
    server.script("prompt 3", Reply(429, retry_after=0.5), Reply(500))   # then it succeeds
    ...  # point an llm endpoint at server.base_url
    server.stop()

From a shell: ``python -m modelq.testing.llm_stub --port 8001 --latency 3.5``.

The answer to a chat is ``"<model>: <last user message>"``; usage counts words.
Plain asyncio, no web framework, so hundreds of open connections cost next to nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Received", "Reply", "StubLLMServer"]

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


@dataclass(frozen=True)
class Reply:
    """One scripted answer: an HTTP status (with an optional ``Retry-After``), or ``hang`` seconds of silence."""

    status: int = 200
    retry_after: float | str | None = None
    #: Wait this long before answering at all (longer than the client's timeout: a timeout).
    hang: float = 0.0
    message: str = "injected failure"


@dataclass(frozen=True)
class Received:
    """A request the server answered."""

    at: float  # time.monotonic() when it arrived
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    status: int

    @property
    def prompt(self) -> str | None:
        """The last user message's text (what scripts are keyed on)."""
        return _last_user_text(self.body)


def _last_user_text(body: dict[str, Any]) -> str | None:
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
                return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
            return None if content is None else str(content)
    return None


@dataclass
class StubLLMServer:
    """The server; runs its own event loop in a daemon thread between :meth:`start` and :meth:`stop`."""

    host: str = "127.0.0.1"
    port: int = 0
    #: Seconds every successful answer takes.
    latency: float = 0.0
    #: When set, requests must carry ``Authorization: Bearer <api_key>`` (else 401).
    api_key: str | None = None
    received: list[Received] = field(default_factory=list)
    _scripts: dict[str, deque[Reply]] = field(default_factory=lambda: defaultdict(deque))
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _server: asyncio.base_events.Server | None = None
    _open: int = 0
    #: Most connections open at once, and most requests being answered at once.
    peak_open: int = 0
    _active: int = 0
    peak_active: int = 0

    # Control (any thread) -----------------------------------------------------------------

    def script(self, prompt: str, *replies: Reply) -> None:
        """Answer the next requests whose last user message is ``prompt`` with ``replies``, in order."""
        with self._lock:
            self._scripts[prompt].extend(replies)

    def requests_for(self, prompt: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.prompt == prompt]

    def completions(self) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.path.endswith("/chat/completions")]

    def reset(self) -> None:
        with self._lock:
            self.received.clear()
            self._scripts.clear()
            self.peak_open = self._open
            self.peak_active = self._active

    @property
    def base_url(self) -> str:
        """What an OpenAI client takes as its base URL: ``http://host:port/v1``."""
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> StubLLMServer:
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._connection, self.host, self.port, backlog=4096)
                )
                self.port = self._server.sockets[0].getsockname()[1]
            except BaseException as exc:  # noqa: BLE001 - reported to start()
                failure.append(exc)
                ready.set()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=serve, name="modelq-stub-llm", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        loop, server = self._loop, self._server
        if loop is None or server is None:
            return

        async def close() -> None:
            server.close()
            for task in [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]:
                task.cancel()

        asyncio.run_coroutine_threadsafe(close(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._loop = self._server = None

    def __enter__(self) -> StubLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # HTTP ----------------------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open += 1
        self.peak_open = max(self.peak_open, self._open)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _version = (lines[0].split(" ", 2) + ["", ""])[:3]
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        key, value = line.split(":", 1)
                        headers[key.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length") or 0))
                status, extra, payload = await self._answer(method, path, headers, body)
                data = json.dumps(payload).encode()
                head_out = [
                    f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}",
                    "content-type: application/json",
                    f"content-length: {len(data)}",
                ] + [f"{k}: {v}" for k, v in extra.items()]
                writer.write(("\r\n".join(head_out) + "\r\n\r\n").encode() + data)
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    return
        except (asyncio.CancelledError, ConnectionError):
            return
        finally:
            self._open -= 1
            writer.close()

    async def _answer(self, method: str, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, dict, Any]:
        arrived = time.monotonic()
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {}
        self._active += 1
        self.peak_active = max(self.peak_active, self._active)
        try:
            status, extra, payload = await self._route(method, path, headers, body)
        finally:
            self._active -= 1
        with self._lock:
            self.received.append(Received(at=arrived, path=path, headers=headers, body=body, status=status))
        return status, extra, payload

    async def _route(self, method: str, path: str, headers: dict[str, str], body: Any) -> tuple[int, dict, Any]:
        if self.api_key is not None and headers.get("authorization") != f"Bearer {self.api_key}":
            return 401, {}, _error("invalid_api_key", "Incorrect API key provided")
        route = path.split("?", 1)[0].rstrip("/")
        if method == "GET" and route.endswith("/models"):
            return 200, {}, {"object": "list", "data": [{"id": "stub", "object": "model", "owned_by": "modelq"}]}
        if method != "POST" or not route.endswith("/chat/completions"):
            return 404, {}, _error("not_found", f"no route {method} {path}")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body.get("model"):
            return 400, {}, _error("invalid_request_error", "model and messages are required")
        prompt = _last_user_text(body)
        with self._lock:
            queue = self._scripts.get(prompt or "")
            reply = queue.popleft() if queue else None
        if reply is not None and (reply.hang or reply.status != 200):
            if reply.hang:
                await asyncio.sleep(reply.hang)
            if reply.status != 200:
                extra = {} if reply.retry_after is None else {"retry-after": str(reply.retry_after)}
                code = "server_error" if reply.status >= 500 else "rate_limit_exceeded"
                return reply.status, extra, _error(code, reply.message)
        if self.latency:
            await asyncio.sleep(self.latency)
        return 200, {}, _completion(body, prompt)


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": code, "code": code}}


def _words(value: Any) -> int:
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(_words(part.get("text", "")) for part in value if isinstance(part, dict))
    return 0


def _completion(body: dict[str, Any], prompt: str | None) -> dict[str, Any]:
    text = f"{body['model']}: {prompt or ''}"
    prompt_tokens = sum(_words(m.get("content")) for m in body["messages"] if isinstance(m, dict))
    completion_tokens = len(text.split())
    max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
    finish = "stop"
    if isinstance(max_tokens, int) and completion_tokens > max_tokens:
        text = " ".join(text.split()[:max_tokens])
        completion_tokens, finish = max_tokens, "length"
    return {
        "id": f"chatcmpl-{time.monotonic_ns()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A stand-in OpenAI-compatible chat server (modelq).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per answer")
    parser.add_argument("--api-key", default=None)
    args = parser.parse_args(argv)
    server = StubLLMServer(host=args.host, port=args.port, latency=args.latency, api_key=args.api_key).start()
    print(f"stub LLM server on {server.base_url} (latency {args.latency:g}s); Ctrl-C stops it", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()

"""Request size limit: bodies over ``MODELQ_MAX_REQUEST_BYTES`` answer 413 before they are parsed.

A path may have a limit of its own (PDF uploads take ``MODELQ_MAX_PDF_BYTES``)."""

from __future__ import annotations

import json
from typing import Any


class BodySizeLimit:
    """Pure ASGI middleware: checks Content-Length, and counts streamed bytes when there is none."""

    def __init__(self, app: Any, max_bytes: int, per_path: dict[str, tuple[int, str]] | None = None) -> None:
        """``per_path``: path -> (limit in bytes, the setting that sets it)."""
        self.app = app
        self.max_bytes = max_bytes
        self.per_path = per_path or {}

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, setting = self.per_path.get(scope.get("path", ""), (self.max_bytes, "MODELQ_MAX_REQUEST_BYTES"))
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await self._reject(send, limit, setting)
            return
        # Read the body up front (never more than the limit) and replay it, so an
        # oversized stream answers 413 instead of surfacing as a parse error.
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message]), send)
                return
            received += len(message.get("body", b""))
            if received > limit:
                await self._reject(send, limit, setting)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        await self.app(
            scope, _replay([{"type": "http.request", "body": b"".join(chunks), "more_body": False}], receive), send
        )

    @staticmethod
    async def _reject(send: Any, limit: int, setting: str) -> None:
        body = json.dumps(
            {
                "error": "PayloadTooLarge",
                "message": f"request body is larger than the limit of {limit} bytes ({setting})",
                "field": "body",
                "limit": limit,
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _replay(messages: list[dict], then: Any = None) -> Any:
    pending = list(messages)

    async def receive() -> dict:
        if pending:
            return pending.pop(0)
        if then is not None:
            return await then()  # e.g. http.disconnect while a response streams
        return {"type": "http.disconnect"}

    return receive

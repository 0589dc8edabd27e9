"""Errors on the OpenAI-compatible routes in OpenAI's own shape.

modelq answers errors as ``{"error": "InvalidInput", "message": ..., "field": ...}``. Clients of
OpenAI's API (the ``openai`` package, LangChain, ...) read ``{"error": {"message", "type",
"param", "code"}}`` instead: on the routes they call, this middleware rewrites every JSON error
answer, whichever part of modelq made it (a handler, the key check, the body size limit), into
that shape. modelq's own fields stay inside the error object (``"limit": 2048``).
"""

from __future__ import annotations

import json
from typing import Any

#: The routes that claim OpenAI compatibility.
OPENAI_PATHS = frozenset({"/v1/embeddings", "/v1/images/generations", "/v1/images/edits", "/v1/models"})

#: OpenAI's error ``type`` for an HTTP status.
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def openai_error(status: int, body: dict[str, Any]) -> dict[str, Any]:
    """A modelq error body as OpenAI's: ``{"error": {"message", "type", "param", "code", ...}}``."""
    extra = {key: value for key, value in body.items() if key not in ("error", "message", "field", "detail")}
    return {
        "error": {
            "message": str(body.get("message") or body.get("detail") or "error"),
            "type": _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error"),
            "param": body.get("field"),
            "code": body.get("error") if isinstance(body.get("error"), str) else None,
            **extra,
        }
    }


class OpenAIErrorShape:
    """Pure ASGI middleware: on :data:`OPENAI_PATHS`, JSON error answers become OpenAI-shaped."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path") not in OPENAI_PATHS:
            await self.app(scope, receive, send)
            return
        start: dict | None = None
        chunks: list[bytes] = []

        async def reshape(message: dict) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                headers = dict(message.get("headers") or [])
                if message["status"] < 400 or not headers.get(b"content-type", b"").startswith(b"application/json"):
                    await send(message)
                    return
                start = message  # an error: hold it until its body is complete
                return
            if start is None:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            try:
                body = openai_error(start["status"], json.loads(b"".join(chunks)))
                data = json.dumps(body).encode()
            except (ValueError, AttributeError):  # not a modelq error body: pass it on unchanged
                data = b"".join(chunks)
            headers = [(k, v) for k, v in start.get("headers") or [] if k.lower() != b"content-length"]
            await send({**start, "headers": [*headers, (b"content-length", str(len(data)).encode())]})
            await send({"type": "http.response.body", "body": data})

        await self.app(scope, receive, reshape)

"""API keys on every request: the key's owner becomes ``request.state.owner``, or the answer is 401.

A key is read from ``Authorization: Bearer <key>`` (what the ``openai`` client sends), from
``X-API-Key``, or from the ``modelq_api_key`` cookie that the web UI sets (an ``EventSource``
or an ``<img>`` cannot send headers). The cookie is ``SameSite=Strict``: another site's page
cannot make a browser send it.

With no key configured the middleware is not installed: nobody has an owner, and the API only
listens on loopback (see :mod:`modelq.access`).
"""

from __future__ import annotations

import json
from http.cookies import SimpleCookie
from typing import Any

from modelq.access import KeyRing

COOKIE = "modelq_api_key"
#: Paths anyone may read: probes, the API's own description, and the UI's files (which ask for a key).
PUBLIC_PATHS = frozenset(
    {"/", "/ui", "/healthz", "/readyz", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
)


def presented_key(headers: dict[bytes, bytes]) -> str | None:
    """The key a request carries, if any (header first, then the UI's cookie)."""
    authorization = headers.get(b"authorization", b"").decode("latin-1").strip()
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    header = headers.get(b"x-api-key", b"").decode("latin-1").strip()
    if header:
        return header
    cookies = SimpleCookie()
    try:
        cookies.load(headers.get(b"cookie", b"").decode("latin-1"))
    except Exception:  # a malformed cookie header is no key, not a 500
        return None
    morsel = cookies.get(COOKIE)
    return morsel.value if morsel is not None and morsel.value else None


class ApiKeyAuth:
    """Pure ASGI middleware: sets ``scope["state"]["owner"]`` from the key, or answers 401."""

    def __init__(self, app: Any, keys: KeyRing) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or _is_public(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        key = presented_key(dict(scope.get("headers") or []))
        if key is None:
            await _unauthorized(send, "this API needs a key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'")
            return
        owner = self.keys.owner_of(key)
        if owner is None:
            await _unauthorized(send, "the API key is not valid (keys are made by `modelq keys new OWNER`)")
            return
        scope.setdefault("state", {})["owner"] = owner
        await self.app(scope, receive, send)


def owner_of(request: Any) -> str | None:
    """The owner of the key a request came with; None when the API has no keys (nobody is an owner)."""
    return getattr(request.state, "owner", None)


def _is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith("/ui/")


async def _unauthorized(send: Any, message: str) -> None:
    body = json.dumps({"error": "Unauthorized", "message": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"www-authenticate", b'Bearer realm="modelq"'),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})

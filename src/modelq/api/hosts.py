"""Trusted hosts: the API answers only requests whose ``Host`` header names it.

With no API keys, the API trusts whoever reaches it, and relies on listening on loopback. A web
page the user opens can still reach ``127.0.0.1`` through a DNS name that first resolves to the
page's server and then to 127.0.0.1 (DNS rebinding): the browser sends that name as ``Host``.
So without keys only localhost, 127.0.0.1 and [::1] (any port) are served, and the setting
``allowed_hosts`` admits more; with keys, any host unless ``allowed_hosts`` is set.

A pure ASGI middleware (Starlette's ``TrustedHostMiddleware`` answers a bare "Invalid host
header" and cannot say which setting admits the host).
"""

from __future__ import annotations

import json
from typing import Any

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]", "::1")


def hostname(header: str) -> str:
    """The host of a ``Host`` header value, without its port, lowercased (``[::1]:8000`` -> ``[::1]``)."""
    value = header.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[: end + 1] if end > 0 else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def allowed(host: str, patterns: list[str]) -> bool:
    """Whether ``host`` (no port) matches one of ``patterns`` (``*`` any; ``*.example.com`` its subdomains)."""
    for pattern in patterns:
        pattern = pattern.strip().lower()
        if pattern == "*" or host == pattern:
            return True
        if pattern.startswith("*.") and host.endswith(pattern[1:]):
            return True
    return False


def trusted_patterns(settings: Any, has_keys: bool) -> list[str] | None:
    """The host patterns served (None: any host)."""
    if settings.allowed_hosts is not None:
        return [*settings.allowed_hosts, *([] if has_keys else LOOPBACK_HOSTS)]
    return None if has_keys else list(LOOPBACK_HOSTS)


class TrustedHosts:
    """Answer 400, naming ``MODELQ_ALLOWED_HOSTS``, to a request whose ``Host`` is not trusted."""

    def __init__(self, app: Any, patterns: list[str]) -> None:
        self.app = app
        self.patterns = patterns

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        host = hostname(headers.get(b"host", b"").decode("latin-1"))
        if allowed(host, self.patterns):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        message = (
            f"host {host or '(none)'!r} is not served here; to serve it, add it to MODELQ_ALLOWED_HOSTS "
            "(allowed_hosts in the config)"
        )
        body = json.dumps({"error": "UntrustedHost", "message": message, "field": "host"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 400,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

"""Broker URL resolution and health: the embedded Redis, or the configured server."""

from __future__ import annotations

from modelq.broker.embedded import EmbeddedRedis
from modelq.config import Settings, safe_url
from modelq.errors import BrokerUnavailable

__all__ = ["EmbeddedRedis", "broker_url", "result_backend_url", "check_broker", "is_redis_url"]


def broker_url(settings: Settings, *, start: bool = False) -> str:
    """The broker URL for these settings.

    Args:
        settings: the settings in force.
        start: with the embedded broker, start it when it is not running.
    """
    if settings.broker_url:
        return settings.broker_url
    embedded = EmbeddedRedis(settings.home_dir)
    if start:
        embedded.ensure_running()
    return embedded.url


def is_redis_url(url: str | None) -> bool:
    """Whether a URL names a Redis server (``redis://``, ``rediss://``, the embedded
    ``redis+socket://``, ``unix://``): kombu's Redis transport, where priorities, visibility
    timeout and leases work differently, and a store the LLM rate limiter can share."""
    return str(url or "").startswith(("redis", "unix://"))


def result_backend_url(settings: Settings) -> str | None:
    """The Celery result backend: configured, else the broker itself when it is Redis.

    With an AMQP broker and no result backend configured, results live only in the
    job store (waiting polls the database).
    """
    if settings.result_backend:
        return settings.result_backend
    url = broker_url(settings)
    return url if is_redis_url(url) else None


def check_broker(app, timeout: float = 2.0) -> None:  # noqa: ANN001 - a Celery app
    """Raise :class:`BrokerUnavailable` unless the broker accepts a connection."""
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
    except Exception as exc:  # kombu raises many transport-specific errors
        settings = getattr(getattr(app, "modelq", None), "settings", None)
        if settings is not None and settings.uses_embedded_broker:
            raise BrokerUnavailable(
                f"the embedded broker in {settings.home_dir} is not running; start `modelq up` or "
                "`modelq worker` with this MODELQ_HOME first"
            ) from exc
        raise BrokerUnavailable(f"broker {safe_url(app.conf.broker_url)!r} is unreachable: {exc}") from exc

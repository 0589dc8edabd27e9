"""The HTTP API: ``create_api(settings)`` builds the FastAPI app."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any

from modelq.errors import MissingDependency

try:
    from fastapi import FastAPI
except ImportError as exc:  # pragma: no cover - depends on the install
    raise MissingDependency("fastapi", "api") from exc

from modelq.config import Settings, load_settings

__all__ = ["create_api", "server_config"]

#: Seconds the server keeps an idle keep-alive connection open. uvicorn's default, 5 s, is shorter
#: than clients keep pooled connections (httpx, the openai client, a load balancer's 60 s): a
#: request a client sends on a pooled connection just as the server closes it is reset
#: ("Connection reset by peer") and, being a POST, not retried. Seen with 64 concurrent
#: /generate calls after a pause of about 5 s.
KEEP_ALIVE_SECONDS = 75


def server_config(api: Any, *, host: str, port: int, log_level: str = "warning", **options: Any) -> Any:
    """The uvicorn configuration every modelq API server runs with (``modelq up``, ``modelq api``, benches)."""
    import uvicorn

    return uvicorn.Config(
        api, host=host, port=port, log_level=log_level, timeout_keep_alive=KEEP_ALIVE_SECONDS, **options
    )


def create_api(settings: Settings | None = None, *, celery_app: Any = None) -> FastAPI:
    """Build the API for these settings.

    Args:
        settings: the settings in force (default: from the environment).
        celery_app: an existing modelq Celery app (default: built from ``settings``,
            starting the embedded broker when it is the one configured).
    """
    from modelq.access import KeyRing
    from modelq.api import (
        cluster,
        documents,
        embeddings,
        errors,
        health,
        image_edits,
        images,
        jobs,
        metrics,
        models,
        timetable,
        ui,
    )
    from modelq.api.auth import ApiKeyAuth
    from modelq.api.hosts import TrustedHosts, trusted_patterns
    from modelq.api.limits import BodySizeLimit
    from modelq.api.openai_errors import OpenAIErrorShape
    from modelq.celery_app import create_celery_app
    from modelq.jobs.service import JobService

    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(api: FastAPI):  # noqa: ANN202
        app = celery_app or create_celery_app(settings, start_broker=True)
        app.modelq.store  # noqa: B018 - migrate the job store before the first request
        api.state.jobs = JobService(app)
        yield
        api.state.jobs.store.dispose()

    api = FastAPI(
        title="modelq",
        version=__import__("modelq").__version__,
        description="ML models and heavy compute behind a distributed job queue built on Celery.",
        lifespan=lifespan,
    )
    api.state.settings = settings
    # A PDF upload may be larger than other requests: its own limit, plus room for the multipart framing.
    pdf_limit = (max(settings.max_request_bytes, settings.max_pdf_bytes + 1024 * 1024), "MODELQ_MAX_PDF_BYTES")
    api.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes, per_path={"/v1/documents": pdf_limit})
    keys = KeyRing(settings.api_keys)
    if keys:  # a request without a key is answered before its body is read
        api.add_middleware(ApiKeyAuth, keys=keys)
    api.add_middleware(OpenAIErrorShape)  # it reshapes the answers of the two above too
    patterns = trusted_patterns(settings, bool(keys))
    if patterns is not None:  # outermost: a request from an untrusted host is answered before anything runs
        api.add_middleware(TrustedHosts, patterns=patterns)
    errors.install_error_handlers(api)
    api.include_router(health.router)
    api.include_router(metrics.router)
    api.include_router(jobs.router)
    api.include_router(models.router)
    api.include_router(embeddings.router)
    api.include_router(timetable.router)
    api.include_router(images.router)
    api.include_router(image_edits.router)
    api.include_router(documents.router)
    api.include_router(cluster.router)
    api.include_router(ui.router)
    return api

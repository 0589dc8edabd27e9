"""modelq: ML models and heavy compute behind a distributed job queue built on Celery.

Importing modelq is light (no torch, no broker connection). ``modelq.app`` is the
Celery app for the settings in the environment, built on first use, so Celery's
own tools work: ``celery -A modelq inspect ping``, ``celery -A modelq flower``.
"""

from __future__ import annotations

from typing import Any

from modelq.client import Client
from modelq.config import Settings, load_settings
from modelq.errors import (
    BrokerUnavailable,
    ConfigError,
    InvalidInput,
    JobCancelled,
    JobFailed,
    JobNotFound,
    JobTimeout,
    ModelqError,
    TaskCancelled,
    TaskNotFound,
)
from modelq.execs import ExecResult, ExternalProgramFailed, run_exec
from modelq.models.batching import batch_call
from modelq.models.registry import model
from modelq.tasks import current_context, current_job, progress, task

__version__ = "0.1.0"

__all__ = [
    # tasks
    "task",
    "progress",
    "current_job",
    "current_context",
    "run_exec",
    "ExecResult",
    "ExternalProgramFailed",
    # models
    "model",
    "get_model",
    "batch_call",
    # interfaces
    "Client",
    "Settings",
    "load_settings",
    "create_celery_app",
    "get_app",
    # errors
    "ModelqError",
    "ConfigError",
    "InvalidInput",
    "TaskNotFound",
    "JobNotFound",
    "JobFailed",
    "JobTimeout",
    "JobCancelled",
    "TaskCancelled",
    "BrokerUnavailable",
]

_app = None


def get_app():  # noqa: ANN201 - celery.Celery
    """The Celery app for the current environment's settings (built once per process)."""
    global _app
    if _app is None:
        from modelq.celery_app import create_celery_app

        _app = create_celery_app(load_settings())
    return _app


def create_celery_app(settings: Settings | None = None, **kwargs: Any):  # noqa: ANN201
    from modelq.celery_app import create_celery_app as factory

    return factory(settings or load_settings(), **kwargs)


def get_model(name: str) -> Any:
    """The loaded model ``name`` (see :func:`modelq.models.get_model`)."""
    from modelq.models import get_model as _get_model

    return _get_model(name)


def __getattr__(name: str) -> Any:
    # `celery -A modelq` looks up `modelq.app`, then `modelq.celery`.
    if name in ("app", "celery"):
        return get_app()
    raise AttributeError(f"module 'modelq' has no attribute {name!r}")

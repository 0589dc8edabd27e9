"""The baseline for the ``queue`` scenario: a plain Celery app with a no-op task.

Celery's defaults, plus JSON messages (modelq never pickles either), on the broker named by
``RAW_CELERY_BROKER_URL``, which is also the result backend. The worker runs as::

    RAW_CELERY_BROKER_URL=redis+socket://... \\
        python -m celery -A modelq.bench.raw_celery worker -Q modelq-bench-raw --pool solo -c 1
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

#: Not a ``MODELQ_*`` name: modelq settings forbid unknown keys of their own prefix.
BROKER_ENV = "RAW_CELERY_BROKER_URL"
QUEUE = "modelq-bench-raw"
NOOP = "modelq_bench.noop"


def create_app(broker_url: str) -> Celery:
    """A plain Celery app on ``broker_url`` (also the result backend) with the ``noop`` task."""
    app = Celery("modelq_bench_raw", broker=broker_url, backend=broker_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_default_queue=QUEUE,
        task_default_exchange=QUEUE,
        task_default_routing_key=QUEUE,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )

    @app.task(name=NOOP, shared=False)
    def noop(**kw: Any) -> dict[str, Any]:
        return kw

    return app


_app: Celery | None = None


def __getattr__(name: str) -> Any:
    # `celery -A modelq.bench.raw_celery` looks up `app`; build it from the environment then.
    global _app
    if name == "app":
        if _app is None:
            url = os.environ.get(BROKER_ENV)
            if not url:
                raise RuntimeError(f"set {BROKER_ENV} to the broker URL of the benchmark")
            _app = create_app(url)
        return _app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

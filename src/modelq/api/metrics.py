"""``GET /metrics``: the cluster's figures in Prometheus's text format (see :mod:`modelq.metrics`)."""

from __future__ import annotations

import threading

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from modelq.metrics import ModelqCollector

router = APIRouter(tags=["metrics"])
_registry_lock = threading.Lock()


def _registry(request: Request) -> CollectorRegistry:
    """One registry per API, made on the first scrape (its histograms start then)."""
    state = request.app.state
    with _registry_lock:
        if getattr(state, "metrics_registry", None) is None:
            registry = CollectorRegistry(auto_describe=False)
            registry.register(ModelqCollector(state.jobs.app))
            state.metrics_registry = registry
        return state.metrics_registry


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def metrics(request: Request) -> Response:
    """Jobs by task and status, queue wait and run time, queue depths, model loads and memory."""
    return Response(generate_latest(_registry(request)), media_type=CONTENT_TYPE_LATEST)

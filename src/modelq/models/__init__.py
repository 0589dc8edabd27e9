"""Models: the registry, memory-budgeted residency, affinity and batching.

Inside a task, ``modelq.get_model(name)`` returns the loaded model, loading it at
most once per worker process and holding it (never evicted) until the job ends.
"""

from __future__ import annotations

import threading
from typing import Any

from modelq.models.registry import ModelRegistry, ModelSpec, declare, model
from modelq.models.residency import Budget, Residency, ResidencyHooks, budgets_from_settings

__all__ = [
    "ModelSpec",
    "ModelRegistry",
    "Residency",
    "ResidencyHooks",
    "Budget",
    "model",
    "declare",
    "get_model",
    "residency_for",
]

_lock = threading.Lock()
_default: Residency | None = None


def residency_for(settings: Any, hooks: list[ResidencyHooks] | None = None) -> Residency:
    """A residency manager for these settings (one per process is the rule; see Runtime)."""
    return Residency(ModelRegistry(settings), budgets_from_settings(settings), list(hooks or []))


def _default_residency() -> Residency:
    global _default
    with _lock:
        if _default is None:
            from modelq.config import load_settings

            _default = residency_for(load_settings())
        return _default


def get_model(name: str) -> Any:
    """The loaded model ``name``.

    In a running job, the model stays held (never evicted) until the job ends.
    Outside a job (a notebook, a script) it is loaded into this process's
    residency and returned.

    Raises:
        ModelNotFound: no model is declared under that name.
        MemoryBudgetExceeded: it can never fit its device's budget.
        ModelLoadError: its loader failed.
    """
    from modelq.tasks import current_context

    ctx = current_context()
    if ctx is not None and ctx.residency is not None:
        obj = ctx.residency.acquire(name)
        ctx.held.append(name)
        return obj
    residency = _default_residency()
    with residency.use(name) as obj:
        return obj

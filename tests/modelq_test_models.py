"""Tiny real torch models for the residency tests, built on the fly and loaded by the real loader code."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import torch

#: How many times each source was loaded in this process.
LOADS: dict[str, int] = {}
_lock = threading.Lock()


def make_linear(path: Path, megabytes: float) -> Path:
    """Save a Linear layer of about ``megabytes`` MB of float32 weights."""
    out = max(1, int(megabytes * 1024 * 1024 / 4 / 256))
    torch.save(torch.nn.Linear(256, out, bias=False).state_dict(), path)
    return path


def load_linear(spec):  # noqa: ANN001, ANN201 - the loader signature modelq calls
    """Loader named in specs as 'modelq_test_models:load_linear'."""
    with _lock:
        LOADS[spec.source] = LOADS.get(spec.source, 0) + 1
    if spec.options.get("slow"):
        time.sleep(float(spec.options["slow"]))  # a load that takes a while, like a real model's
    state = torch.load(spec.source, map_location=spec.device)
    weight = state["weight"]
    layer = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    layer.load_state_dict(state)
    return layer.to(spec.device)

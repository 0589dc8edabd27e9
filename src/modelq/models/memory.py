"""Memory: budget sizes, device totals and a loaded model's measured footprint."""

from __future__ import annotations

import os
import re
import sys
from typing import Any

from modelq.errors import ConfigError

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "t": 1000**4,
    "tb": 1000**4,
    "tib": 1024**4,
}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*$")


def parse_size(value: str | int | float | None, *, total: int | None = None, key: str = "memory") -> int | None:
    """Bytes from ``"12GB"``, ``"512MiB"``, ``1e9``, or a fraction of ``total`` (``"0.8"``).

    Raises:
        ConfigError: the value is not a size.
    """
    if value is None:
        return None
    if isinstance(value, (int, float)):
        number, unit = float(value), ""
    else:
        match = _SIZE.match(str(value))
        if not match or match.group(2).lower() not in _UNITS:
            raise ConfigError(key, f"{value!r} is not a size like '12GB', '512MiB' or a fraction like '0.8'")
        number, unit = float(match.group(1)), match.group(2).lower()
    if unit == "" and 0 < number <= 1:
        if total is None:
            raise ConfigError(key, f"{value!r} is a fraction, but the device's total memory is unknown")
        return int(number * total)
    return int(number * _UNITS[unit])


def device_kind(device: str) -> str:
    """``cpu`` or ``cuda:N`` (a bare ``cuda`` is ``cuda:0``)."""
    if device == "cuda":
        return "cuda:0"
    return device


def cuda_available() -> bool:
    """True when torch is importable and sees a GPU (never imports torch just to ask)."""
    torch = sys.modules.get("torch")
    if torch is None:
        try:
            import torch  # noqa: F401
        except ImportError:
            return False
        torch = sys.modules["torch"]
    return bool(torch.cuda.is_available())


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda:0" if cuda_available() else "cpu"
    return device_kind(device)


def device_total_bytes(device: str) -> int | None:
    if device == "cpu":
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError):
            return None
    import torch

    return int(torch.cuda.get_device_properties(torch.device(device)).total_memory)


def process_rss() -> int:
    """Resident set size of this process, in bytes."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def device_used_bytes(device: str) -> int:
    """What a footprint is measured with: CUDA allocated bytes on a GPU, RSS on the CPU."""
    if device == "cpu":
        return process_rss()
    import torch

    return int(torch.cuda.memory_allocated(torch.device(device)))


def tensor_bytes(obj: Any) -> int:
    """Bytes held by a torch module's parameters and buffers (0 for other objects)."""
    parameters = getattr(obj, "parameters", None)
    buffers = getattr(obj, "buffers", None)
    if not callable(parameters):
        return 0
    try:
        total = sum(p.numel() * p.element_size() for p in parameters())
        if callable(buffers):
            total += sum(b.numel() * b.element_size() for b in buffers())
        return int(total)
    except Exception:  # not a torch module after all
        return 0


def free_device_memory(device: str) -> None:
    """Give memory back eagerly after an eviction."""
    import gc

    gc.collect()
    if device.startswith("cuda") and "torch" in sys.modules:
        sys.modules["torch"].cuda.empty_cache()

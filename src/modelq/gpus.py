"""One worker process per GPU: which GPUs ``--gpus`` names, and the processes that serve them.

Each process sees one GPU (``CUDA_VISIBLE_DEVICES`` pinned, so its models load on ``cuda:0``,
which is that GPU) and has a hostname that names it (``gpu2@host``), so residency figures,
``modelq inspect`` and the placement snapshot tell the GPUs apart.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from typing import Any

from modelq.errors import ConfigError
from modelq.processes import die_with_parent


def visible_gpus() -> list[str]:
    """The NVIDIA GPUs of this host by index, from ``nvidia-smi`` (no torch import, no CUDA context)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run(
            [smi, "--query-gpu=index", "--format=csv,noheader"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip().isdigit()]


def parse_gpus(value: str) -> list[str]:
    """``all`` (every GPU ``nvidia-smi`` lists) or a comma-separated list of indices such as ``0,2``."""
    if value.strip() == "all":
        found = visible_gpus()
        if not found:
            raise ConfigError("--gpus", "'all' found no NVIDIA GPU (nvidia-smi lists none); name them, e.g. --gpus 0,1")
        return found
    indices = [part.strip() for part in value.split(",") if part.strip()]
    bad = [part for part in indices if not part.isdigit()]
    if bad or not indices:
        raise ConfigError("--gpus", f"expected 'all' or GPU indices such as 0,2; got {value!r}")
    if len(set(indices)) != len(indices):
        raise ConfigError("--gpus", f"a GPU is named twice in {value!r}")
    return indices


def gpu_hostname(gpu: str, hostname: str | None) -> str:
    """``gpu2@%h``, or the given name with the GPU in front of its node part (``gpu2-infer@%h``)."""
    if not hostname:
        return f"gpu{gpu}@%h"
    node, at, host = hostname.partition("@")
    return f"gpu{gpu}-{node}{at}{host}" if at else f"gpu{gpu}-{hostname}"


def run_per_gpu(gpus: list[str], worker_args: list[str], hostname: str | None, **popen: Any) -> int:
    """Run ``modelq worker <worker_args>`` once per GPU, pinned to it; stop them all on SIGTERM or Ctrl-C.

    Returns the first non-zero exit status of a worker, else 0.
    """
    procs = []
    for gpu in gpus:
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpu}
        argv = [sys.executable, "-m", "modelq", "worker", *worker_args, "--hostname", gpu_hostname(gpu, hostname)]
        procs.append(subprocess.Popen(argv, env=env, preexec_fn=die_with_parent, **popen))

    def forward(signum: int, _frame: Any) -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        codes = [proc.wait() for proc in procs]
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return next((code for code in codes if code), 0)

"""User tasks the test suite registers through MODELQ_IMPORTS, as a user's module would."""

from __future__ import annotations

from pathlib import Path

import modelq


@modelq.task("tests.touch", queue="cpu")
def touch(path: str) -> str:
    """Create a file: proof that the job ran."""
    Path(path).write_text("ran")
    return path


@modelq.task("tests.count")
def count(path: str) -> int:
    """Append to a file and return how many times this ran."""
    with open(path, "a") as handle:
        handle.write("x")
    return len(Path(path).read_text())


@modelq.task("tests.fail")
def fail(message: str = "boom") -> None:
    raise ValueError(message)


class Flaky(Exception):
    pass


@modelq.task(
    "tests.flaky", retries=4, retry_for=(Flaky,), retry_backoff=False, retry_jitter=False, default_retry_delay=0
)
def flaky(path: str, failures: int) -> int:
    """Fail the first `failures` attempts, then return the attempt number."""
    with open(path, "a") as handle:
        handle.write("x")
    attempt = len(Path(path).read_text())
    if attempt <= failures:
        raise Flaky(f"attempt {attempt} fails on purpose")
    return attempt


@modelq.task("tests.artifact")
def artifact(text: str) -> dict:
    meta = modelq.current_job().save_artifact("note.txt", text.encode())
    return {"size": meta["size"]}


@modelq.task("tests.unserialisable")
def unserialisable() -> object:
    return object()


@modelq.task("tests.infer", models=["m-a"], model_arg="model")
def infer(model: str = "m-a", values: list[float] | None = None) -> dict:
    """Run a tiny linear model; the result says which model and process answered."""
    import os

    import torch

    layer = modelq.get_model(model)
    with torch.no_grad():
        out = layer(torch.tensor([values or [1.0] * 256]))
    return {"model": model, "sum": round(float(out.sum()), 3), "pid": os.getpid()}


@modelq.task("tests.batched", models=["m-a"], model_arg="model")
def batched(rows: list[list[float]], model: str = "m-a") -> list[dict]:
    """One forward pass shared with other jobs running at the same time."""
    import torch

    layer = modelq.get_model(model)

    def forward(items: list[list[float]]) -> list[dict]:
        with torch.no_grad():
            out = layer(torch.tensor(items)).sum(dim=1)
        return [{"sum": round(float(v), 3), "batch": len(items)} for v in out]

    return modelq.batch_call(("tests.batched", model), rows, forward)


@modelq.task("tests.exec")
def run_program(
    name: str, args: list, timeout: float | None = None, env: dict | None = None, cwd: str | None = None
) -> dict:
    """Run a configured external program through modelq's one helper."""
    result = modelq.run_exec(name, args, timeout=timeout, env=env, cwd=cwd)
    return {"returncode": result.returncode, "stdout": result.stdout, "stderr": result.stderr}


@modelq.task("tests.die_once")
def die_once(path: str) -> int:
    """Kill this worker process the first time (as an OOM kill would), succeed the next."""
    import os
    import signal

    marker = Path(path)
    runs = len(marker.read_text()) + 1 if marker.exists() else 1
    marker.write_text("x" * runs)
    if runs == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return runs


@modelq.task("tests.die_always")
def die_always(path: str) -> None:
    """Kill this worker process every time (a job that can never finish)."""
    import os
    import signal

    with open(path, "a") as handle:
        handle.write("x")
    os.kill(os.getpid(), signal.SIGKILL)


@modelq.task("tests.slow_count")
def slow_count(path: str, seconds: float) -> int:
    """Count a start in a file, run for a while, return how many starts there were."""
    import time

    with open(path, "a") as handle:
        handle.write("x")
    time.sleep(seconds)
    return len(Path(path).read_text())


@modelq.task("tests.touch_slowly", queue="cpu")
def touch_slowly(path: str, seconds: float) -> int:
    """Like tests.slow_count, on the cpu queue (where the crash tests run their solo workers)."""
    return slow_count(path, seconds)


def load_sleepy(spec):  # noqa: ANN001, ANN201 - the loader signature modelq calls
    """A model whose load takes ``options.load_seconds`` (reading weights, as a real one would): no torch."""
    import time

    time.sleep(float(spec.options.get("load_seconds", 0.5)))
    return {"name": spec.name}


@modelq.task("tests.use_model", models=["m0"], model_arg="model")
def use_model(model: str = "m0", seconds: float = 0.05) -> dict:
    """An accelerator-like job: holds the model ``seconds`` while the CPU stays free."""
    import time

    held = modelq.get_model(model)
    time.sleep(seconds)
    return {"model": held["name"]}

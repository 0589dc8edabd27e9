"""Helpers for testing code that runs on modelq, used by modelq's own tests and benchmarks.

* :func:`serving`: an API (``modelq.api.create_api(...)``) on a free port, in a thread.
* :func:`wait_until`: poll a condition with a deadline (never a bare ``sleep``).
* :func:`free_port`, :func:`child_env`, :func:`worker_command`, :func:`stop_process`: child
  processes (``modelq worker`` subprocesses) with a clean environment, always stopped.
* :mod:`modelq.testing.llm_stub`: a stand-in OpenAI-compatible server for the LLM workload.

Nothing here replaces a real component: the API, Celery and the broker stay real.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class TimedOut(AssertionError):
    """A condition awaited with :func:`wait_until` did not come true in time."""


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 30.0,
    *,
    what: str = "condition",
    interval: float = 0.05,
    check: Callable[[], None] | None = None,
) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that.

    Args:
        timeout: seconds before giving up with :class:`TimedOut`.
        what: what is awaited, for the error message.
        interval: seconds between polls.
        check: called before each poll; raises to stop early (e.g. a child process exited).
    """
    deadline = time.monotonic() + timeout
    while True:
        if check is not None:
            check()
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimedOut(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (from the kernel's ephemeral range)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_env(home: Path | None = None, **extra: str) -> dict[str, str]:
    """An environment for modelq subprocesses: this one without its ``MODELQ_*`` variables (so no
    setting of the caller's shell leaks in), unbuffered output, ``MODELQ_HOME`` when ``home`` is
    given, then ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELQ_")}
    env["PYTHONUNBUFFERED"] = "1"
    if home is not None:
        env["MODELQ_HOME"] = str(home)
    env.update(extra)
    return env


def worker_command(
    queues: str,
    hostname: str,
    *,
    pool: str | None = None,
    concurrency: int | None = None,
    loglevel: str = "WARNING",
    extra: Sequence[str] = (),
) -> list[str]:
    """The command line of a ``modelq worker`` subprocess of this interpreter, reading ``queues``
    (comma-separated) as ``hostname``; the pool and concurrency are the queues' own unless given."""
    argv = [sys.executable, "-m", "modelq", "worker", "-Q", queues, "--hostname", hostname, "--loglevel", loglevel]
    if pool is not None:
        argv += ["--pool", pool]
    if concurrency is not None:
        argv += ["-c", str(concurrency)]
    return [*argv, *extra]


def stop_process(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """Stop ``proc`` as systemd would: SIGTERM, then SIGKILL after ``timeout`` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def serving(api: Any, *, timeout: float = 30.0, **options: Any) -> Iterator[str]:
    """Run the ASGI ``api`` (e.g. ``modelq.api.create_api(settings)``) with uvicorn in a thread on a
    free port; yields its base URL and stops it on exit. ``options`` go to
    :func:`modelq.api.server_config` (e.g. ``access_log=False``)."""
    import uvicorn

    from modelq.api import server_config

    port = free_port()
    server = uvicorn.Server(server_config(api, host="127.0.0.1", port=port, **options))
    thread = threading.Thread(target=server.run, name="modelq-testing-api", daemon=True)
    thread.start()
    try:

        def running() -> None:
            if not thread.is_alive():
                raise TimedOut(f"the API server on 127.0.0.1:{port} stopped during start-up")

        wait_until(lambda: server.started, timeout, what="the API to start", interval=0.02, check=running)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)

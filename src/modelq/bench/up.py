"""Scenario ``up`` (target P7): ``modelq up`` from a cold spawn to accepting and finishing a job.

Each run uses a fresh temporary ``MODELQ_HOME`` (nothing started, no job store yet) and a
free port, and measures from ``Popen`` until

* ``ready_seconds``: ``POST /v1/jobs {"task": "echo", "input": {"x": 1}}`` answers 202;
* ``first_job_seconds``: that job's ``GET /v1/jobs/{id}`` answers 200 with the result;

then sends SIGINT and checks that ``modelq up`` exits within a deadline, leaving no worker
and no broker behind (``clean_shutdown``). Medians over the runs are reported.
"""

from __future__ import annotations

import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modelq.bench import BenchError
from modelq.bench.report import Panel, Report, fmt
from modelq.bench.support import Child, child_env, descendants, free_port, kill_leftovers, still_running

TARGET = {"ready_seconds_max": 3.0}
READY_TIMEOUT = 60.0
FIRST_JOB_TIMEOUT = 60.0
SHUTDOWN_TIMEOUT = 30.0
POLL_INTERVAL = 0.01
JOB = {"task": "echo", "input": {"x": 1}}


def run(*, settings: Any = None, quick: bool = False, say: Callable[[str], None] = lambda _m: None) -> Report:
    """Measure; returns the report (see the module docstring)."""
    repeats = 1 if quick else 3
    runs = []
    for i in range(repeats):
        say(f"run {i + 1}/{repeats}: modelq up in a fresh home")
        runs.append(_one_run(say))
    return _report(runs)


def _one_run(say: Callable[[str], None]) -> dict[str, Any]:
    import httpx

    from modelq.broker import EmbeddedRedis

    home = Path(tempfile.mkdtemp(prefix="modelq-bench-up-"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    tree: list[tuple[int, int]] = []
    up: Child | None = None
    try:
        with httpx.Client(base_url=base, timeout=5.0) as http:
            started = time.perf_counter()
            up = Child(
                "modelq up",
                [sys.executable, "-m", "modelq", "up", "--port", str(port)],
                env=child_env(home),
                cwd=home,
                log=home / "up.log",
            )

            job_id = _wait_accepted(http, up)
            ready = time.perf_counter() - started
            say(f"  accepting jobs after {ready:.2f}s")

            _wait_finished(http, up, job_id)
            first_job = time.perf_counter() - started
            say(f"  first job done after {first_job:.2f}s")

        # The workers `up` started sit in their own sessions: note them before they could be orphaned.
        tree = descendants(up.pid)
        stopping = time.perf_counter()
        up.proc.send_signal(signal.SIGINT)
        try:
            code: int | None = up.proc.wait(timeout=SHUTDOWN_TIMEOUT)
        except subprocess.TimeoutExpired:
            code = None
        shutdown = time.perf_counter() - stopping
        leftovers = still_running(tree)
        broker_left = EmbeddedRedis(home).ping()
        clean = code is not None and not leftovers and not broker_left
        say(f"  stopped after {shutdown:.2f}s (exit code {code}; {'clean' if clean else 'NOT clean'})")
        return {
            "ready_seconds": round(ready, 3),
            "first_job_seconds": round(first_job, 3),
            "shutdown_seconds": round(shutdown, 3),
            "exit_code": code,
            "clean_shutdown": clean,
            "leftover_processes": len(leftovers),
            "broker_left_running": broker_left,
            "processes": len(tree) + 1,
        }
    finally:
        if up is not None:
            tree = tree or descendants(up.pid)
            up.stop(signal.SIGINT, timeout=SHUTDOWN_TIMEOUT)
            kill_leftovers(tree)
        EmbeddedRedis(home).stop()
        shutil.rmtree(home, ignore_errors=True)


def _wait_accepted(http: Any, up: Child) -> str:
    """Poll ``POST /v1/jobs`` until it answers 202; returns the job id."""
    import httpx

    deadline = time.monotonic() + READY_TIMEOUT
    last = "no answer"
    while True:
        up.ensure_alive()
        try:
            response = http.post("/v1/jobs", json=JOB)
            if response.status_code == 202:
                return response.json()["id"]
            last = f"HTTP {response.status_code}: {response.text[:200]}"
        except httpx.TransportError as exc:
            last = f"{type(exc).__name__}"
        if time.monotonic() >= deadline:
            raise BenchError(
                f"modelq up did not accept a job within {READY_TIMEOUT:g}s (last: {last}); log: {up.log_tail()}"
            )
        time.sleep(POLL_INTERVAL)


def _wait_finished(http: Any, up: Child, job_id: str) -> None:
    """Long-poll ``GET /v1/jobs/{id}`` until it answers 200 with the echoed input."""
    import httpx

    deadline = time.monotonic() + FIRST_JOB_TIMEOUT
    last = "no answer"
    while True:
        up.ensure_alive()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BenchError(
                f"the first job {job_id} did not finish within {FIRST_JOB_TIMEOUT:g}s "
                f"(last: {last}); log: {up.log_tail()}"
            )
        wait = min(remaining, 2.0)
        try:
            response = http.get(f"/v1/jobs/{job_id}", params={"wait": round(wait, 3)}, timeout=wait + 5.0)
        except httpx.TransportError as exc:
            last = type(exc).__name__
            time.sleep(POLL_INTERVAL)
            continue
        if response.status_code == 200:
            job = response.json()
            if job.get("status") != "succeeded" or job.get("result") != JOB["input"]:
                raise BenchError(
                    f"the first job finished as {job.get('status')}: {job.get('error') or job.get('result')}"
                )
            return
        if response.status_code != 202:
            raise BenchError(f"GET /v1/jobs/{job_id} answered HTTP {response.status_code}: {response.text[:200]}")
        last = f"HTTP 202 ({response.json().get('status')})"


def _report(runs: list[dict[str, Any]]) -> Report:
    ready = statistics.median(r["ready_seconds"] for r in runs)
    first_job = statistics.median(r["first_job_seconds"] for r in runs)
    shutdown = statistics.median(r["shutdown_seconds"] for r in runs)
    clean = all(r["clean_shutdown"] for r in runs)
    figures: dict[str, Any] = {
        "scenario": "up",
        "ready_seconds": round(ready, 3),
        "first_job_seconds": round(first_job, 3),
        "shutdown_seconds": round(shutdown, 3),
        "clean_shutdown": clean,
        "repeats": len(runs),
        "runs": runs,
        "target": dict(TARGET),
        "meets_target": {"ready_seconds": ready <= TARGET["ready_seconds_max"]},
    }
    rows = [
        [
            f"run {i + 1}",
            fmt(r["ready_seconds"], " s"),
            fmt(r["first_job_seconds"], " s"),
            fmt(r["shutdown_seconds"], " s"),
            "yes" if r["clean_shutdown"] else f"[red]no[/red] (exit {r['exit_code']})",
        ]
        for i, r in enumerate(runs)
    ]
    met = "[green]meets[/green]" if figures["meets_target"]["ready_seconds"] else "[red]misses[/red]"
    rows.append(
        [
            f"median ({met} <= {TARGET['ready_seconds_max']:g} s)",
            fmt(ready, " s"),
            fmt(first_job, " s"),
            fmt(shutdown, " s"),
            "yes" if clean else "[red]no[/red]",
        ]
    )
    bars = {"ready (202)": ready, "first job (200)": first_job, "shutdown": shutdown}
    return Report(
        scenario="up",
        title="P7: modelq up, cold start in a fresh MODELQ_HOME",
        figures=figures,
        columns=["", "ready", "first job", "shutdown", "clean"],
        rows=rows,
        panels=[
            Panel(
                f"median of {len(runs)} run(s)",
                "seconds",
                bars,
                target=TARGET["ready_seconds_max"],
                target_label="P7: ready <= 3 s",
            )
        ],
        notes=[
            "ready = spawn -> POST /v1/jobs answers 202; first job = spawn -> its GET answers 200 with the result; "
            "shutdown = SIGINT -> exit (clean: no worker or broker left)."
        ],
    )

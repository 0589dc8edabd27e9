"""The task of the ``chaos`` scenario, and what its log says about each job's runs.

Workers get this module through ``MODELQ_IMPORTS=modelq.bench.chaos_tasks``; the bench process
imports it too, so its client knows the task.

``bench.chaos_work`` writes one JSON line when its body starts and one when it ends, to a log
file shared by every worker process. Each line is a single ``write()`` on a file opened with
``O_APPEND``: lines of different processes never interleave. :func:`runs` turns the log into
intervals, and :func:`concurrent_jobs` finds the jobs with two runs at once.
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from pathlib import Path
from typing import Any

import modelq

TASK = "bench.chaos_work"


def record(log: str | Path, event: dict[str, Any]) -> None:
    """Append ``event`` as one JSON line (one atomic ``O_APPEND`` write)."""
    line = (json.dumps(event, separators=(",", ":")) + "\n").encode()
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def read_log(log: str | Path) -> list[dict[str, Any]]:
    """The events of a log written by :func:`record` (none when it does not exist yet)."""
    try:
        text = Path(log).read_text()
    except FileNotFoundError:
        return []
    # A line is written whole or not at all; a torn last line can only come from a full disk.
    return [json.loads(line) for line in text.splitlines() if line.endswith("}")]


@modelq.task(TASK)
def chaos_work(log: str, seconds: float = 0.5) -> dict[str, Any]:
    """Note the start, "work" for ``seconds``, note the end (scenario ``chaos``)."""
    job = modelq.current_job()
    run = uuid.uuid4().hex
    base = {"job": job.id, "run": run, "pid": os.getpid(), "attempt": job.attempt}
    record(log, {**base, "event": "start", "t": time.time()})
    time.sleep(seconds)
    record(log, {**base, "event": "end", "t": time.time()})
    return {"run": run, "pid": os.getpid()}


# Reading the log ------------------------------------------------------------------------


def running(events: list[dict[str, Any]]) -> dict[int, str]:
    """pid -> job of every run that has started and not ended."""
    ended = {e["run"] for e in events if e["event"] == "end"}
    return {e["pid"]: e["job"] for e in events if e["event"] == "start" and e["run"] not in ended}


def runs(events: list[dict[str, Any]], kills: list[tuple[int, float]]) -> list[dict[str, Any]]:
    """Every run: ``run``, ``job``, ``pid``, ``start``, ``end`` and how it ended (``ended``: "end", "killed", "unexplained").

    A run with no "end" line ends at the first kill of its pid after its start (``kills`` are
    ``(pid, time)`` pairs, the time taken once the process was known dead); with no such kill it
    runs until ``math.inf``, so that it cannot hide an overlap.
    """
    found: dict[str, dict[str, Any]] = {}
    for event in events:
        run = found.setdefault(
            event["run"], {"run": event["run"], "job": event["job"], "pid": event["pid"], "start": None, "end": None}
        )
        run[event["event"]] = event["t"]
    out = []
    for run in found.values():
        if run["start"] is None:
            continue  # the task writes its "start" before its "end": an end alone is not a run
        if run["end"] is not None:
            out.append({**run, "ended": "end"})
            continue
        killed = min((t for pid, t in kills if pid == run["pid"] and t >= run["start"]), default=math.inf)
        out.append({**run, "end": killed, "ended": "killed" if killed < math.inf else "unexplained"})
    return out


def concurrent_jobs(all_runs: list[dict[str, Any]]) -> set[str]:
    """Jobs with two runs whose intervals overlap (one started before the other had ended)."""
    by_job: dict[str, list[tuple[float, float]]] = {}
    for run in all_runs:
        by_job.setdefault(run["job"], []).append((run["start"], run["end"]))
    found = set()
    for job, intervals in by_job.items():
        latest_end = -math.inf
        for start, end in sorted(intervals):
            if start < latest_end:
                found.add(job)
                break
            latest_end = max(latest_end, end)
    return found

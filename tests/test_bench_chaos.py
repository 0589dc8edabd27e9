"""``modelq bench chaos``: jobs submitted while workers and the broker are killed are neither lost nor run twice at once.

One smoke run (``--quick``) as a subprocess, exactly as a user runs it. The figures checked are
correctness figures (counts), never timings.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_chaos_scenario_loses_no_job_and_runs_none_twice_at_once(tmp_path: Path) -> None:
    # given a quick chaos run: pool processes and a whole worker killed, the broker killed and restarted,
    # a message taken off its queue, the broker's data flushed
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELQ_")}
    proc = subprocess.run(
        [sys.executable, "-m", "modelq", "bench", "chaos", "--quick", "--json", "--out", str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=420,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # then stdout is exactly one JSON object
    assert proc.stdout.strip().count("\n") == 0
    figures = json.loads(proc.stdout)
    for key in (
        "submitted",
        "succeeded",
        "failed",
        "lost",
        "duplicated_concurrently",
        "refused",
        "max_attempts",
        "worker_kills",
        "broker_restarts",
        "worker_exits",
        "wall_seconds",
        "events",
    ):
        assert key in figures, key
    assert figures["scenario"] == "chaos" and figures["target_id"] == "R1" and figures["quick"] is True
    # and the chaos happened
    assert figures["worker_kills"] >= 1 and figures["broker_restarts"] >= 1
    # and the broker lost messages for good (one taken off its queue, a FLUSHDB): the reconciler published them again
    assert figures["messages_taken"] >= 1 and figures["broker_flushes"] >= 1 and figures["republished"] >= 1
    assert figures["killed_runs"] >= 1, "no job body was running when its process was killed"
    # and every accepted job finished, exactly once at a time, and succeeded
    assert figures["submitted"] > 0
    assert figures["lost"] == 0, figures["lost_jobs"]
    assert figures["duplicated_concurrently"] == 0, figures["duplicated_jobs"]
    assert figures["unexplained_open_runs"] == 0
    assert figures["succeeded"] == figures["submitted"]
    assert figures["failed"] == 0
    # and no worker ended by itself (a broker restart must not end a worker holding jobs)
    assert figures["worker_exits"] == 0, [e for e in figures["events"] if e["event"] == "worker_exited"]
    assert figures["meets_target"] == {"lost": True, "duplicated_concurrently": True}
    assert (out / "chaos.png").read_bytes()[:8] == PNG_SIGNATURE


def test_runs_overlap_only_when_a_second_run_starts_before_the_first_has_ended() -> None:
    from modelq.bench.chaos_tasks import concurrent_jobs, runs

    def line(job: str, run: str, pid: int, event: str, t: float) -> dict:
        return {"job": job, "run": run, "pid": pid, "event": event, "t": t}

    events = [
        # a: killed at t=2, redelivered at t=3: one after the other
        line("a", "a1", 1, "start", 0.0),
        line("a", "a2", 2, "start", 3.0),
        line("a", "a2", 2, "end", 4.0),
        # b: a second run starts while the first still runs
        line("b", "b1", 3, "start", 0.0),
        line("b", "b2", 4, "start", 1.0),
        line("b", "b1", 3, "end", 2.0),
        line("b", "b2", 4, "end", 3.0),
        # c: a run that never ended and that no kill explains overlaps anything after it
        line("c", "c1", 5, "start", 0.0),
        line("c", "c2", 6, "start", 10.0),
        line("c", "c2", 6, "end", 11.0),
        # d: a kill of pid 7 before its run started belongs to an earlier process with that pid
        line("d", "d1", 7, "start", 5.0),
    ]
    kills = [(1, 2.0), (7, 1.0)]

    found = runs(events, kills)

    assert {r["job"]: r["ended"] for r in found if r["run"] in ("a1", "c1", "d1")} == {
        "a": "killed",
        "c": "unexplained",
        "d": "unexplained",
    }
    assert next(r for r in found if r["run"] == "a1")["end"] == 2.0
    assert concurrent_jobs(found) == {"b", "c"}

"""The figures of scenario ``chaos`` (:mod:`modelq.bench.chaos`): lost and duplicated jobs from the job
records and the task's log of runs, and the report."""

from __future__ import annotations

from typing import Any

from modelq.bench.chaos_plan import (
    CONCURRENCY,
    JOB_SECONDS,
    LONG_JOB_SECONDS,
    TARGET,
    VISIBILITY_TIMEOUT,
    WORKERS,
)
from modelq.bench.chaos_tasks import concurrent_jobs
from modelq.bench.report import Panel, Report, verdict
from modelq.jobs.status import is_finished


def analyse(
    accepted: list[str], records: dict[str, dict[str, Any] | None], all_runs: list[dict[str, Any]]
) -> dict[str, Any]:
    """The job figures (see the module docstring) from the records and the runs in the task's log."""
    mine = set(accepted)
    started: dict[str, int] = {}
    completed: dict[str, int] = {}
    for r in all_runs:
        started[r["job"]] = started.get(r["job"], 0) + 1
        completed[r["job"]] = completed.get(r["job"], 0) + (r["ended"] == "end")
    status = {job: (records.get(job) or {}).get("status") for job in accepted}
    return {
        "submitted": len(accepted),
        "succeeded": sum(s == "succeeded" for s in status.values()),
        "failed": sum(s in ("failed", "cancelled") for s in status.values()),
        "lost": sum(not is_finished(s) for s in status.values()),
        "duplicated_concurrently": len(concurrent_jobs(all_runs) & mine),
        "ran_more_than_once": sum(started.get(j, 0) > 1 for j in accepted),
        "completed_more_than_once": sum(completed.get(j, 0) > 1 for j in accepted),
        "succeeded_without_a_completed_run": sum(s == "succeeded" and not completed.get(j) for j, s in status.items()),
        "max_attempts": max(((records.get(j) or {}).get("attempts") or 0 for j in accepted), default=0),
        "runs": len(all_runs),
        "killed_runs": sum(r["ended"] == "killed" for r in all_runs),
        "unexplained_open_runs": sum(r["ended"] == "unexplained" for r in all_runs),
        "lost_jobs": [
            {"id": j, "status": s, "attempts": (records.get(j) or {}).get("attempts")}
            for j, s in status.items()
            if not is_finished(s)
        ],
        "failed_jobs": [
            {
                "id": j,
                "status": s,
                "error": (records.get(j) or {}).get("error"),
                "attempts": (records.get(j) or {}).get("attempts"),
            }
            for j, s in status.items()
            if s in ("failed", "cancelled")
        ],
        # each job that ran twice at once, with its runs (pid, start, end, how it ended) and record
        "duplicated_jobs": [
            {
                "id": j,
                "attempts": (records.get(j) or {}).get("attempts"),
                "republished": (records.get(j) or {}).get("republished"),
                "runs": [{k: r.get(k) for k in ("pid", "start", "end", "ended")} for r in all_runs if r["job"] == j],
            }
            for j in sorted(concurrent_jobs(all_runs) & mine)
        ],
    }


def report(figures: dict[str, Any]) -> Report:
    meets = {
        "lost": figures["lost"] <= TARGET["lost"],
        "duplicated_concurrently": figures["duplicated_concurrently"] <= TARGET["duplicated_concurrently"],
    }
    figures.update(
        scenario="chaos",
        target=dict(TARGET),
        meets_target=meets,
        broker="embedded redis (unix socket), killed with SIGKILL and restarted from its append-only file",
        pool=f"{WORKERS} prefork workers x {CONCURRENCY}",
        visibility_timeout=VISIBILITY_TIMEOUT,
        job_seconds=JOB_SECONDS,
        long_job_seconds=LONG_JOB_SECONDS,
    )
    f = figures
    rows = [
        ["submitted (accepted)", str(f["submitted"]), "", ""],
        ["succeeded", str(f["succeeded"]), f"= {f['submitted']}", verdict(f["succeeded"] == f["submitted"])],
        ["failed", str(f["failed"]), "", ""],
        ["lost", str(f["lost"]), "= 0", verdict(meets["lost"])],
        [
            "duplicated concurrently",
            str(f["duplicated_concurrently"]),
            "= 0",
            verdict(meets["duplicated_concurrently"]),
        ],
        ["ran more than once (one after the other)", str(f["ran_more_than_once"]), "", ""],
        ["completed more than once", str(f["completed_more_than_once"]), "", ""],
        ["max attempts", str(f["max_attempts"]), "", ""],
        ["worker kills / exits by themselves", f"{f['worker_kills']} / {f['worker_exits']}", "", ""],
        ["broker restarts (longest outage)", f"{f['broker_restarts']} ({f['broker_down_seconds']:.1f} s)", "", ""],
        ["of them without the append-only file", str(f["broker_wipes"]), "", ""],
        ["submissions refused (longest refusal)", f"{f['refused']} ({f['refused_after_seconds']:.1f} s)", "", ""],
        ["messages taken off the queue / broker flushes", f"{f['messages_taken']} / {f['broker_flushes']}", "", ""],
        ["jobs the reconciler published again", str(f["republished"]), "", ""],
        ["wall", f"{f['wall_seconds']:.1f} s", "", ""],
    ]
    return Report(
        scenario="chaos",
        title="R1: jobs under worker kills, broker restarts and lost messages (embedded Redis)",
        figures=figures,
        columns=["", "value", "target", "met"],
        rows=rows,
        panels=[
            Panel(
                "accepted jobs",
                "jobs",
                {
                    "submitted": f["submitted"],
                    "succeeded": f["succeeded"],
                    "failed": f["failed"],
                    "lost": f["lost"],
                    "run twice at once": f["duplicated_concurrently"],
                },
            ),
            Panel(
                "chaos",
                "count",
                {
                    "worker kills": f["worker_kills"],
                    "broker restarts": f["broker_restarts"],
                    "messages taken": f["messages_taken"],
                    "broker flushes": f["broker_flushes"],
                    "republished": f["republished"],
                    "refused": f["refused"],
                    "runs killed": f["killed_runs"],
                },
            ),
        ],
        notes=[
            f"{WORKERS} prefork workers x {CONCURRENCY}, visibility timeout {VISIBILITY_TIMEOUT} s, jobs of {JOB_SECONDS} s "
            f"and long jobs of {LONG_JOB_SECONDS:g} s across broker outages; a killed run ends when its process is known "
            "dead, so a redelivery after the kill is not counted as concurrent.",
        ],
    )

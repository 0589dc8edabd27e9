"""``modelq bench itc``: ITC-2007 instances as timetable jobs with a time limit on 1 and 2 real workers.

One smoke run (``--quick``: comp01, 10 s a side) as a subprocess, exactly as a user runs it. The
figures checked are what the user reads off the report, never timings or costs beyond feasibility.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_itc_scenario_reports_each_side_beside_the_winner(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELQ_")}
    proc = subprocess.run(
        [sys.executable, "-m", "modelq", "bench", "itc", "--quick", "--json", "--out", str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=420,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(proc.stdout)
    assert figures["scenario"] == "itc" and figures["target_id"] == "T1" and figures["budget_seconds"] == 10
    row = figures["instances"]["comp01"]
    assert row["winner"] == 5
    for side in ("1 worker", "2 workers"):
        # a feasible timetable, its ratio to the winner's cost, and the best cost after each epoch
        assert row[side]["hard"] == 0 and row[side]["ratio"] == round(row[side]["soft"] / 5, 3)
        soft = [soft for _t, _hard, soft in row[side]["trace"]]
        assert soft and soft == sorted(soft, reverse=True) and soft[-1] == row[side]["soft"]
    # one island per free slot: 2 workers run twice the islands of 1
    assert row["2 workers"]["islands"] == 2 * row["1 worker"]["islands"]
    assert figures["feasible"] is True and set(figures["meets_target"]) == {
        "feasible",
        "geomean_ratio",
        "ratio_max",
        "two_workers_better",
    }
    assert (out / "itc.png").read_bytes()[:8] == PNG_SIGNATURE

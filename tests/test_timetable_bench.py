"""``modelq bench timetable``: a smoke run reports P6's figures (shape only; timings are never asserted)."""

from __future__ import annotations

from pathlib import Path

from bench_helpers import assert_png, run_json


def test_timetable_scenario_reports_speedup_efficiency_and_scores_per_mode(tmp_path: Path) -> None:
    figures, out = run_json(tmp_path, "timetable", timeout=240)  # one JSON object on stdout
    assert figures["scenario"] == "timetable" and figures["target_id"] == "P6"
    for key in ("speedup", "efficiency", "one_worker_seconds", "two_workers_seconds", "machine_ceiling"):
        assert isinstance(figures[key], float) and figures[key] > 0, key
    assert figures["efficiency"] == round(figures["speedup"] / 2, 3)
    # both sides did the same work and, the run being deterministic, found the same timetables
    assert figures["equal_evaluations"] is True and figures["same_result"] is True
    assert set(figures["modes"]) == {"fast", "balanced", "best"}
    assert all(m["hard"] >= 0 and m["soft"] >= 0 and m["evaluations"] > 0 for m in figures["modes"].values())
    assert figures["target"] == {"speedup_min": 1.8}
    assert isinstance(figures["meets_target"]["speedup"], bool)
    assert_png(out / "timetable.png")

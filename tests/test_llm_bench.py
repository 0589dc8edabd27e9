"""``modelq bench llm --quick --json``: the P5 scenario runs end to end and reports its figures.

Shape only (positive numbers, consistent ratios), never the targets: timings are not asserted.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench_helpers import assert_png, run_json


def test_llm_scenario_reports_wall_over_latency_speedup_and_memory(tmp_path: Path) -> None:
    figures, out = run_json(tmp_path, "llm", timeout=180)  # one JSON object on stdout

    assert figures["scenario"] == "llm" and figures["target_id"] == "P5" and figures["quick"] is True
    assert figures["calls"] == 168
    # every call was in flight at once (the worker allows 200)
    assert figures["server_peak_concurrent"] == 168
    for key in (
        "wall_over_latency",
        "speedup_vs_sequential",
        "latency_s",
        "wall_s",
        "sequential_wall_s",
        "worker_idle_rss_mb",
        "worker_peak_rss_mb",
    ):
        assert isinstance(figures[key], int | float) and figures[key] > 0, (key, figures[key])
    assert figures["wall_over_latency"] == pytest.approx(figures["wall_s"] / figures["latency_s"], rel=0.01)
    assert figures["speedup_vs_sequential"] == pytest.approx(figures["sequential_wall_s"] / figures["wall_s"], rel=0.01)
    assert figures["worker_peak_rss_mb"] >= figures["worker_idle_rss_mb"]
    assert figures["target"] == {"wall_over_latency_max": 1.3, "speedup_vs_sequential_min": 100.0}
    assert all(isinstance(v, bool) for v in figures["meets_target"].values())
    assert_png(out / "llm.png")

"""``modelq bench``: each scenario runs end to end and reports sensible figures.

Smoke runs (``--quick``) as subprocesses, exactly as a user runs them. Timings are
checked for shape (positive numbers), never against the targets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench_helpers import assert_png, bench, run_json


def positive(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def test_queue_scenario_reports_modelq_beside_raw_celery(tmp_path: Path) -> None:
    figures, out = run_json(tmp_path, "queue")

    assert figures["scenario"] == "queue"
    for key in (
        "rtt_p50_ratio",
        "throughput_ratio",
        "http_rtt_p50_ratio",
        "http_throughput_ratio",
        "raw_p50_ms",
        "modelq_p50_ms",
        "http_p50_ms",
        "raw_p95_ms",
        "modelq_p95_ms",
        "http_p95_ms",
        "raw_throughput",
        "modelq_throughput",
        "http_throughput",
    ):
        assert positive(figures[key]), (key, figures[key])
    for side in ("raw", "modelq", "http"):
        assert figures[f"{side}_p95_ms"] >= figures[f"{side}_p50_ms"]
    assert figures["rtt_p50_ratio"] == pytest.approx(figures["modelq_p50_ms"] / figures["raw_p50_ms"], rel=0.01)
    assert figures["target"] == {"rtt_p50_ratio_max": 1.2, "throughput_ratio_min": 0.85}
    assert set(figures["meets_target"]) >= {"rtt_p50_ratio", "throughput_ratio"}
    assert all(isinstance(v, bool) for v in figures["meets_target"].values())
    assert_png(out / "queue.png")
    assert Path(figures["chart"]) == out / "queue.png"


def test_up_scenario_times_a_cold_start_and_a_clean_shutdown(tmp_path: Path) -> None:
    figures, out = run_json(tmp_path, "up")

    assert figures["scenario"] == "up"
    assert positive(figures["ready_seconds"])
    assert positive(figures["first_job_seconds"])
    assert figures["first_job_seconds"] >= figures["ready_seconds"]
    assert figures["clean_shutdown"] is True
    assert figures["target"] == {"ready_seconds_max": 3.0}
    assert isinstance(figures["meets_target"]["ready_seconds"], bool)
    assert len(figures["runs"]) == figures["repeats"] == 1
    assert_png(out / "up.png")


def test_warm_scenario_reports_a_warm_model_job_beside_the_same_call_in_process(tmp_path: Path) -> None:
    figures, out = run_json(tmp_path, "warm", timeout=300)

    assert figures["scenario"] == "warm" and figures["target_id"] == "P2"
    for key in (
        "warm_ratio",
        "inprocess_p50_ms",
        "modelq_p50_ms",
        "inprocess_p95_ms",
        "modelq_p95_ms",
        "vectors_ratio",
        "modelq_vectors_p50_ms",
        "cold_job_seconds",
        "inprocess_load_seconds",
        "worker_load_seconds",
        "model_bytes",
        "model_tensor_bytes",
    ):
        assert positive(figures[key]), (key, figures[key])
    assert figures["warm_ratio"] == pytest.approx(figures["modelq_p50_ms"] / figures["inprocess_p50_ms"], rel=0.01)
    assert figures["batch_size"] == 32 and figures["embedding_shape"] == [32, 384]
    # the worker loaded the model once and served every later job warm
    assert figures["model_loads"] == 1
    assert figures["model_hits"] >= 2 * figures["calls"]
    assert figures["target"] == {"warm_ratio_max": 1.05}
    assert isinstance(figures["meets_target"]["warm_ratio"], bool)
    assert_png(out / "warm.png")


def test_embed_scenario_reports_batched_beside_in_process_and_naive(tmp_path: Path) -> None:
    figures, out = run_json(tmp_path, "embed", timeout=600)

    assert figures["scenario"] == "embed" and figures["target_id"] == "P3"
    for key in ("inprocess_per_s", "batched_per_s", "naive_per_s", "batched_vs_inprocess", "batched_vs_naive"):
        assert positive(figures[key]), (key, figures[key])
    assert figures["batched_vs_naive"] == pytest.approx(figures["batched_per_s"] / figures["naive_per_s"], rel=0.02)
    assert figures["sentences"] == 128
    for path in ("client", "http"):  # closed-loop clients through both paths (--quick: 1 and 8 of them)
        assert set(figures["curves"][path]) == {"1", "8"} and all(map(positive, figures["curves"][path].values()))
    assert_png(out / "embed.png")


def test_switch_scenario_reports_a_mixed_stream_beside_a_single_model_stream(tmp_path: Path) -> None:
    figures, out = run_json(tmp_path, "switch", timeout=300)

    assert figures["scenario"] == "switch" and figures["target_id"] == "P4"
    assert figures["jobs"] == 32
    for key in (
        "throughput_ratio",
        "single_throughput",
        "mixed_throughput",
        "single_seconds",
        "mixed_seconds",
        "load_seconds",
        "job_p50_ms",
        "throughput_ratio_bound",
    ):
        assert positive(figures[key]), (key, figures[key])
    assert figures["throughput_ratio"] == pytest.approx(
        figures["mixed_throughput"] / figures["single_throughput"], rel=0.01
    )
    # each stream starts with neither model resident: one load for one model, at least two for two
    assert figures["single_loads"] == 1
    assert figures["mixed_loads"] >= 2
    assert isinstance(figures["switches"], int) and figures["switches"] == figures["mixed_loads"] - 1
    assert figures["of_bound"] == pytest.approx(
        figures["throughput_ratio"] / figures["throughput_ratio_bound"], rel=0.01
    )
    assert figures["target"] == {"switches_max": 2.0, "of_bound_min": 0.9}
    assert set(figures["meets_target"]) == {"switches", "of_bound"}
    assert all(isinstance(v, bool) for v in figures["meets_target"].values())
    assert_png(out / "switch.png")


def test_cluster_head_waits_count_from_when_the_jobs_ahead_of_the_model_started() -> None:
    from modelq.bench.cluster_figures import head_waits

    def job(model: str, created: float, started: float) -> dict:
        at = lambda s: f"2026-12-07T12:00:{s:06.3f}+00:00"  # noqa: E731
        return {"input": {"model": model}, "created_at": at(created), "started_at": at(started)}

    # three m0 jobs queued behind a model switch: the first waited 10 s for its model, the others
    # only 1 s each once the jobs ahead of them had started; an m1 job is counted on its own
    waits = head_waits([job("m0", 1, 11), job("m0", 0, 10), job("m0", 2, 12), job("m1", 3, 4.5)])
    assert sorted(waits) == [1.0, 1.0, 1.5, 10.0]


def test_cluster_scenario_reports_every_stream_and_worker_count_beside_a_static_placement(tmp_path: Path) -> None:
    figures, out = run_json(tmp_path, "cluster", timeout=300)

    assert figures["scenario"] == "cluster" and figures["target_id"] == "C1"
    assert figures["workers"] == [1, 2] and figures["models"] == 3
    assert set(figures["runs"]) == {"skewed", "uniform", "shifting", "poisson"}
    for stream, by_workers in figures["runs"].items():
        assert set(by_workers) == {"1", "2"}, stream
        for workers, pair in by_workers.items():
            assert positive(pair["modelq_vs_static"]) and positive(pair["speedup"])
            for side in ("modelq", "static"):
                run = pair[side]
                where = (stream, workers, side)
                for key in ("makespan_s", "loads", "load_seconds_total", "load_share", "wait_max_s"):
                    assert positive(run[key]), (where, key, run[key])
                assert run["wait_max_s"] >= run["wait_p95_s"] >= 0
                assert run["wait_max_s"] >= run["head_wait_max_s"] >= 0
                assert isinstance(run["worker_log_warnings"], int)
                # every job was recorded as run by one of this run's workers, and counted under its model
                assert sum(run["jobs_by_worker"].values()) == run["jobs"], where
                assert sum(m["jobs"] for m in run["wait_by_model"].values()) == run["jobs"], where
                if stream == "poisson":
                    assert run["lower_bound_s"] is None and positive(run["arrival_rate_per_s"])
                else:
                    assert run["jobs"] == figures["jobs"], where
                    assert set(run["wait_by_model"]) == {"m0", "m1", "m2"}, where
                    assert positive(run["lower_bound_s"]) and positive(run["makespan_vs_bound"])
                    # each burst uses all three models: each is loaded at least once
                    assert run["loads"] >= run["min_loads"] == 3, where
            assert "placement" not in pair["modelq"]
            assert len(pair["static"]["placement"]) == int(workers)
    assert figures["runs"]["skewed"]["1"]["static"]["placement"] == {"cluster-r02-w0@modelq-bench": "m0,m1,m2"}
    assert sorted(figures["runs"]["skewed"]["2"]["static"]["placement"].values()) == ["m0", "m1,m2"]
    # the bench raises unless every job succeeded and answered for the model it asked for
    assert figures["all_jobs_succeeded"] is True
    assert figures["jobs_total"] == sum(
        pair[side]["jobs"]
        for by_workers in figures["runs"].values()
        for pair in by_workers.values()
        for side in ("modelq", "static")
    )
    assert figures["target"]["burst_workers"] == [1] and figures["target"]["burst_loads_max"] == {"1": 4}
    assert {
        "skewed_w1_makespan_vs_bound",
        "skewed_w1_loads",
        "uniform_w2_vs_static",
        "shifting_w2_speedup",
        "poisson_w1_load_share",
    } <= set(figures["meets_target"])
    assert all(isinstance(v, bool) for v in figures["meets_target"].values())
    assert_png(out / "cluster.png")


def test_unknown_scenario_is_one_line_naming_the_known_ones(tmp_path: Path) -> None:
    proc = bench(tmp_path, "nope", "--json", "--out", str(tmp_path / "out"), timeout=60)

    assert proc.returncode != 0
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "nope" in lines[0] and "queue" in lines[0] and "up" in lines[0]
    assert not (tmp_path / "out").exists()

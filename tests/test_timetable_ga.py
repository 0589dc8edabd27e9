"""The genetic algorithm and the island model, run on this machine (no broker)."""

from __future__ import annotations

import pytest

from modelq.errors import InvalidInput
from modelq.workloads.timetable import evaluate, resolve_config, solve
from modelq.workloads.timetable.generate import generate_instance


@pytest.fixture(scope="module")
def planted():
    # A dense instance: its planted timetable fills 80 % of the period x room slots.
    return generate_instance(
        11, courses=24, rooms=4, days=5, periods_per_day=4, fill=0.8, curricula=8, unavailability=20
    )


def test_the_island_model_reaches_zero_hard_violations_on_a_planted_instance(planted) -> None:
    instance, timetable = planted
    assert evaluate(instance, timetable)["hard"] == 0  # the instance does have a feasible timetable
    result = solve(instance, "fast", seed=3, processes=0)
    assert result["best"]["hard"] == 0 and result["best"]["feasible"] is True
    assert result["variants"][0]["hard"] == 0
    # progress per epoch: the best so far never gets worse
    history = [(h["hard"], h["soft"]) for h in result["history"]]
    assert len(history) == result["settings"]["epochs"]
    assert history == sorted(history, reverse=True)


def test_variants_are_distinct_ranked_and_scored_like_the_evaluator(planted) -> None:
    instance, _ = planted
    result = solve(instance, "fast", seed=5, variants=4, processes=0)
    variants = result["variants"]
    assert [v["rank"] for v in variants] == [1, 2, 3, 4]
    assert [(v["hard"], v["soft"]) for v in variants] == sorted((v["hard"], v["soft"]) for v in variants)
    timetables = set()
    for variant in variants:
        rows = variant["assignments"]
        # every lecture of every course, once
        assert sorted((a["course"], a["lecture"]) for a in rows) == [
            (c.id, k) for c in instance.courses for k in range(c.lectures)
        ]
        assert all(set(a) == {"course", "lecture", "day", "period", "room"} for a in rows)
        score = evaluate(instance, rows)
        assert {k: variant[k] for k in score} == score
        timetables.add(frozenset((a["course"], a["day"], a["period"], a["room"]) for a in rows))
    assert len(timetables) == len(variants)


def test_the_same_seed_gives_the_same_result_and_another_seed_another(planted) -> None:
    instance, _ = planted
    first = solve(instance, "fast", seed=7, processes=0)
    again = solve(instance, "fast", seed=7, processes=0)
    other = solve(instance, "fast", seed=8, processes=0)
    assert first == again
    assert other["variants"] != first["variants"]


def test_islands_in_local_processes_give_the_same_result_as_in_one(planted) -> None:
    instance, _ = planted
    settings = {"seed": 2, "islands": 3, "epochs": 2, "generations": 5}
    assert solve(instance, "fast", processes=3, **settings) == solve(instance, "fast", processes=0, **settings)


def test_migration_moves_the_best_timetables_around_the_ring(planted) -> None:
    from modelq.workloads.timetable.islands import migrate, run_island_epoch

    instance, _ = planted
    config = resolve_config("fast", seed=1, islands=3, generations=2, migrants=2)
    states = [run_island_epoch(instance, config, i, 0, None) for i in range(3)]
    moved = migrate(states, config)
    for i in range(3):
        source, target = states[(i - 1) % 3], moved[i]
        best_of_source = sorted(zip(source["hard"], source["soft"], strict=True))[:2]
        received = sorted(zip(target["hard"], target["soft"], strict=True))
        assert all(score in received for score in best_of_source)
        # the worst two of the island were replaced, the others stayed
        assert sorted(received) == sorted(
            sorted(zip(states[i]["hard"], states[i]["soft"], strict=True))[:-2] + best_of_source
        )
    isolated = resolve_config("fast", seed=1, islands=3, generations=2, topology="none")
    assert migrate(states, isolated) == states


def test_quality_modes_and_settings_are_checked() -> None:
    fast, best = resolve_config("fast"), resolve_config("best")
    assert fast.islands * fast.epochs * fast.generations < best.islands * best.epochs * best.generations
    with pytest.raises(InvalidInput, match="quality_mode must be one of fast, balanced, best") as caught:
        resolve_config("fastest")
    assert caught.value.field == "input.quality_mode"
    with pytest.raises(InvalidInput, match="islands must be an integer from 1 to 64") as caught:
        resolve_config("fast", islands=0)
    assert caught.value.field == "input.islands"
    with pytest.raises(InvalidInput, match="topology must be one of ring, full, none"):
        resolve_config("fast", topology="star")


def test_torch_fitness_gives_the_same_scores_and_run_as_numpy(planted) -> None:
    pytest.importorskip("torch")
    import numpy as np

    from modelq.workloads.timetable.scoring import fitness_backend, population_scores
    from modelq.workloads.timetable.tables import tables_of

    instance, _ = planted
    tables = tables_of(instance)
    rng = np.random.default_rng(0)
    period = rng.integers(-1, tables.periods, size=(16, tables.lectures))
    room = rng.integers(0, tables.rooms, size=(16, tables.lectures))
    on_numpy = population_scores(tables, period, room)
    on_torch = population_scores(tables, period, room, backend=fitness_backend("torch"))
    assert {k: v.tolist() for k, v in on_torch.items()} == {k: v.tolist() for k, v in on_numpy.items()}
    settings = {"seed": 4, "epochs": 2, "generations": 5}
    with_torch = solve(instance, "fast", processes=0, fitness="torch", **settings)
    with_numpy = solve(instance, "fast", processes=0, **settings)
    assert with_torch["variants"] == with_numpy["variants"]
    assert with_torch["history"] == with_numpy["history"]

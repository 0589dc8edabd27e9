"""The annealing local search on the ITC-2007 instances: its incremental costs agree with the
evaluator, it only improves, and the same seed gives the same timetable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modelq.errors import InvalidInput
from modelq.workloads.timetable import parse_ctt, resolve_config
from modelq.workloads.timetable.anneal import anneal, graph_of, new_state
from modelq.workloads.timetable.scoring import population_scores
from modelq.workloads.timetable.tables import tables_of

pytestmark = pytest.mark.fast

ITC2007 = Path(__file__).resolve().parents[2] / "shared" / "data" / "itc2007"
INSTANCES = [f"comp0{n}" for n in range(1, 8)]


def _instance(name: str):  # noqa: ANN202
    return parse_ctt((ITC2007 / f"{name}.ctt").read_text())


def _cost(tb, period: np.ndarray, room: np.ndarray) -> tuple[int, int]:  # noqa: ANN001
    scores = population_scores(tb, period[None], room[None])
    return int(scores["hard"][0]), int(scores["soft"][0])


@pytest.mark.parametrize("name", INSTANCES)
def test_annealing_costs_agree_with_the_evaluator_from_a_random_timetable(name: str) -> None:
    # given a random timetable: every lecture placed, with clashes, conflicts and unavailable periods
    tb = tables_of(_instance(name))
    rng = np.random.default_rng(7)
    period, room = rng.integers(tb.periods, size=tb.lectures), rng.integers(tb.rooms, size=tb.lectures)
    hard, soft = _cost(tb, period, room)
    assert hard > 0
    # then the annealing's own count of it is the evaluator's
    assert new_state(tb, graph_of(tb), period, room).scores == (hard, soft)
    # and after annealing, the scores it reports are the evaluator's count of the timetable it returns
    best_period, best_room, scores, steps = anneal(tb, period, room, seed=3, iterations=200_000)
    assert steps == 200_000 and scores == _cost(tb, best_period, best_room)
    assert scores[0] < hard


@pytest.mark.parametrize("name", ["comp01", "comp07"])
def test_a_feasible_timetable_stays_feasible_and_its_costs_still_agree(name: str) -> None:
    # given a feasible timetable (annealed from a random one): the steps that would break a hard
    # constraint are now refused before they change any count
    tb = tables_of(_instance(name))
    rng = np.random.default_rng(11)
    period, room = rng.integers(tb.periods, size=tb.lectures), rng.integers(tb.rooms, size=tb.lectures)
    period, room, scores, _ = anneal(tb, period, room, seed=2, iterations=3_000_000)
    assert scores[0] == 0, scores
    # when it anneals on from there, it stays feasible, never gets worse, and its own count of the
    # timetable it returns is still the evaluator's
    again_period, again_room, again, _ = anneal(tb, period, room, seed=4, iterations=2_000_000)
    assert again == _cost(tb, again_period, again_room)
    assert again[0] == 0 and again[1] <= scores[1]


def test_the_same_seed_and_steps_give_the_same_timetable() -> None:
    tb = tables_of(_instance("comp01"))
    rng = np.random.default_rng(1)
    period, room = rng.integers(tb.periods, size=tb.lectures), rng.integers(tb.rooms, size=tb.lectures)
    first = anneal(tb, period, room, seed=5, iterations=50_000)
    again = anneal(tb, period, room, seed=5, iterations=50_000)
    other = anneal(tb, period, room, seed=6, iterations=50_000)
    assert (first[0] == again[0]).all() and (first[1] == again[1]).all() and first[2] == again[2]
    assert not ((first[0] == other[0]).all() and (first[1] == other[1]).all())


def test_a_time_limit_and_annealing_steps_are_checked() -> None:
    assert resolve_config("fast", time_limit=30).time_limit == 30
    assert resolve_config("fast", anneal=0).anneal == 0
    for bad in (0, -5, "10", True, 10**9):
        with pytest.raises(InvalidInput, match="time_limit must be a number of seconds") as caught:
            resolve_config("fast", time_limit=bad)
        assert caught.value.field == "input.time_limit"
    with pytest.raises(InvalidInput, match="anneal must be an integer from 0"):
        resolve_config("fast", anneal=-1)

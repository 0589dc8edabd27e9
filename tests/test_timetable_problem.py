"""Timetable problems: the ITC-2007 ``.ctt`` format, the JSON form, and the evaluator's counts."""

from __future__ import annotations

import random
from itertools import combinations
from typing import Any

import pytest

from modelq.errors import InvalidInput
from modelq.workloads.timetable import (
    evaluate,
    format_ctt,
    format_solution,
    instance_from_dict,
    instance_to_dict,
    parse_ctt,
    parse_solution,
)
from modelq.workloads.timetable.generate import generate_instance, sample

pytestmark = pytest.mark.fast

# Two days of three periods; rooms big (40) and small (20). Teacher T1 teaches A and B;
# curriculum Q1 groups A and C; C may not be taught on day 1, period 0.
TOY = """\
Name: Toy
Courses: 3
Rooms: 2
Days: 2
Periods_per_day: 3
Curricula: 1
Constraints: 1

COURSES:
A T1 2 2 30
B T1 1 1 10
C T2 2 2 50

ROOMS:
big 40
small 20

CURRICULA:
Q1 2 A C

UNAVAILABILITY_CONSTRAINTS:
C 1 0

END.
"""


def at(course: str, day: int, period: int, room: str) -> dict[str, Any]:
    return {"course": course, "day": day, "period": period, "room": room}


# The .ctt format -------------------------------------------------------------------------


def test_ctt_is_read_field_by_field() -> None:
    toy = parse_ctt(TOY)
    assert (toy.name, toy.days, toy.periods_per_day, toy.lectures) == ("Toy", 2, 3, 5)
    assert [(c.id, c.teacher, c.lectures, c.min_working_days, c.students) for c in toy.courses] == [
        ("A", "T1", 2, 2, 30),
        ("B", "T1", 1, 1, 10),
        ("C", "T2", 2, 2, 50),
    ]
    assert [(r.id, r.capacity) for r in toy.rooms] == [("big", 40), ("small", 20)]
    assert [(q.id, q.courses) for q in toy.curricula] == [("Q1", ("A", "C"))]
    assert [(u.course, u.day, u.period) for u in toy.unavailability] == [("C", 1, 0)]


def test_ctt_round_trips_exactly() -> None:
    assert format_ctt(parse_ctt(TOY)) == TOY
    for name in ("small", "medium"):
        text = sample(name)
        assert format_ctt(parse_ctt(text)) == text
    generated, _ = generate_instance(7, courses=15)
    assert parse_ctt(format_ctt(generated)) == generated


def test_json_form_round_trips_and_matches_the_ctt() -> None:
    toy = parse_ctt(TOY)
    data = instance_to_dict(toy)
    assert data["courses"][0] == {"id": "A", "teacher": "T1", "lectures": 2, "min_working_days": 2, "students": 30}
    assert instance_from_dict(data) == toy


@pytest.mark.parametrize(
    ("edit", "line", "expected"),
    [
        (lambda t: t.replace("Rooms: 2", "Room: 2"), 3, "expected 'Rooms: <value>'"),
        (lambda t: t.replace("Days: 2", "Days: two"), 4, "Days must be an integer, got 'two'"),
        (
            lambda t: t.replace("B T1 1 1 10", "B T1 1 10"),
            11,
            "expected '<course> <teacher> <lectures> <min_working_days> <students>' (5 fields), got 4",
        ),
        (lambda t: t.replace("big 40", "big forty"), 15, "<capacity> must be an integer, got 'forty'"),
        (lambda t: t.replace("Q1 2 A C", "Q1 2 A D"), 19, "curriculum 'Q1' names unknown course 'D'"),
        (lambda t: t.replace("Q1 2 A C", "Q1 3 A C"), 19, "says 3 course(s) but lists 2"),
        (lambda t: t.replace("C 1 0", "C 2 0"), 22, "day 2 period 0 is outside 2 day(s) x 3 period(s)"),
        (lambda t: t.replace("Courses: 3", "Courses: 4"), 14, "expected 4 line(s) '<course> <teacher>"),
        (lambda t: t.replace("\nEND.\n", "\n"), 22, "expected 'END.', found the end of the text"),
        (lambda t: t.replace("ROOMS:", "ROOM:"), 14, "expected 'ROOMS:', got 'ROOM:'"),
    ],
)
def test_malformed_ctt_names_the_line_and_what_was_expected(edit, line: int, expected: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_ctt(edit(TOY))
    assert caught.value.field == "ctt"
    assert caught.value.message.startswith(f"line {line}: ")
    assert expected in caught.value.message


def test_json_errors_name_the_field() -> None:
    data = instance_to_dict(parse_ctt(TOY))
    data["rooms"][1]["capacity"] = -3
    with pytest.raises(InvalidInput, match="must be a non-negative integer") as caught:
        instance_from_dict(data)
    assert caught.value.field == "instance.rooms[1].capacity"
    data = instance_to_dict(parse_ctt(TOY))
    data["curricula"][0]["courses"].append("Z")
    with pytest.raises(InvalidInput, match="unknown course 'Z'") as caught:
        instance_from_dict(data)
    assert caught.value.field == "instance.curricula[0].courses[2]"
    with pytest.raises(InvalidInput, match="missing required key 'rooms'"):
        instance_from_dict({"days": 1, "periods_per_day": 1, "courses": []})


# The evaluator ---------------------------------------------------------------------------


def test_a_feasible_timetable_has_only_its_soft_penalties() -> None:
    toy = parse_ctt(TOY)
    timetable = [
        at("A", 0, 0, "big"),
        at("A", 1, 1, "big"),
        at("B", 0, 1, "small"),
        at("C", 0, 1, "big"),
        at("C", 1, 2, "big"),
    ]
    score = evaluate(toy, timetable)
    assert score["hard"] == 0 and score["feasible"] is True
    assert score["hard_violations"] == {"lectures": 0, "room_occupancy": 0, "conflicts": 0, "availability": 0}
    # C has 50 students in a room for 40, twice; Q1 runs A,C back to back on day 0 and
    # A,C back to back on day 1; every course keeps its room; every course meets its days.
    assert score["soft_penalties"] == {
        "room_capacity": 20,
        "min_working_days": 0,
        "curriculum_compactness": 0,
        "room_stability": 0,
    }
    assert score["soft"] == 20


def test_each_hard_violation_is_counted() -> None:
    toy = parse_ctt(TOY)
    timetable = [
        at("A", 0, 0, "big"),
        at("A", 0, 0, "small"),  # two lectures of A at once: lectures +1
        at("B", 0, 0, "small"),  # teacher T1 again (A, B): conflicts +1; room small twice: room_occupancy +1
        at("C", 1, 0, "big"),  # C unavailable on day 1 period 0: availability +1
        # C's second lecture is missing: lectures +1
    ]
    score = evaluate(toy, timetable)
    assert score["hard_violations"] == {"lectures": 2, "room_occupancy": 1, "conflicts": 1, "availability": 1}
    assert score["hard"] == 5 and score["feasible"] is False


def test_soft_penalties_use_the_itc_2007_weights() -> None:
    toy = parse_ctt(TOY)
    timetable = [
        at("A", 0, 0, "big"),
        at("A", 0, 2, "small"),  # one day of 2 (5); 30 in a room for 20 (10); 2 rooms (1)
        at("B", 1, 0, "big"),
        at("C", 1, 2, "big"),
        at("C", 0, 1, "big"),  # 50 in 40, twice (20)
    ]
    score = evaluate(toy, timetable)
    assert score["hard"] == 0
    # Q1 on day 0: periods 0, 1, 2 (none alone); day 1: period 2 alone -> one isolated lecture (2)
    assert score["soft_penalties"] == {
        "room_capacity": 30,
        "min_working_days": 5,
        "curriculum_compactness": 2,
        "room_stability": 1,
    }
    assert score["soft"] == 38


def test_solutions_round_trip_in_the_itc_format() -> None:
    instance, planted = generate_instance(3)
    text = format_solution(planted)
    assert text.splitlines()[0] == "{course} {room} {day} {period}".format(**planted[0])
    assert evaluate(instance, parse_solution(instance, text)) == evaluate(instance, planted)
    lines = text.splitlines()
    lines[1] = "{course} R99 {day} {period}".format(**planted[1])
    with pytest.raises(InvalidInput, match=r"^line 2: unknown room 'R99'"):
        parse_solution(instance, "\n".join(lines))


def test_evaluator_agrees_with_a_literal_reading_of_the_rules() -> None:
    for seed in range(25):
        rng = random.Random(seed)
        instance, _ = generate_instance(
            seed, courses=rng.randint(3, 14), rooms=rng.randint(1, 4), periods_per_day=rng.randint(1, 5)
        )
        timetable = [
            at(
                c.id,
                rng.randrange(instance.days),
                rng.randrange(instance.periods_per_day),
                rng.choice(instance.rooms).id,
            )
            for c in instance.courses
            for _ in range(c.lectures)
            if rng.random() > 0.1
        ]
        score = evaluate(instance, timetable)
        hard, soft = _reference(instance, timetable)
        assert score["hard_violations"] == hard, seed
        assert score["soft_penalties"] == soft, seed


def test_the_planted_timetable_of_a_generated_instance_is_feasible() -> None:
    for seed in range(5):
        instance, planted = generate_instance(seed, courses=20, rooms=4, fill=0.8)
        assert evaluate(instance, planted)["hard"] == 0


def _reference(inst, timetable: list[dict[str, Any]]) -> tuple[dict[str, int], dict[str, int]]:
    """The ITC-2007 rules, written out with loops."""
    ppd = inst.periods_per_day
    given = {
        c.id: [(a["day"] * ppd + a["period"], a["room"]) for a in timetable if a["course"] == c.id]
        for c in inst.courses
    }
    capacity = {r.id: r.capacity for r in inst.rooms}
    blocked = {(u.course, u.day * ppd + u.period) for u in inst.unavailability}
    hard = {"lectures": 0, "room_occupancy": 0, "conflicts": 0, "availability": 0}
    soft = {"room_capacity": 0, "min_working_days": 0, "curriculum_compactness": 0, "room_stability": 0}
    for c in inst.courses:
        periods = [t for t, _ in given[c.id]]
        hard["lectures"] += c.lectures - len(periods) + sum(periods.count(t) - 1 for t in set(periods))
        hard["availability"] += sum((c.id, t) in blocked for t in periods)
        soft["room_capacity"] += sum(max(0, c.students - capacity[r]) for _, r in given[c.id])
        soft["min_working_days"] += 5 * max(0, c.min_working_days - len({t // ppd for t in periods}))
        soft["room_stability"] += max(0, len({r for _, r in given[c.id]}) - 1)
    slots = [slot for c in given for slot in given[c]]
    hard["room_occupancy"] = sum(slots.count(s) - 1 for s in set(slots))
    curricula = {c.id: {q.id for q in inst.curricula if c.id in q.courses} for c in inst.courses}
    teacher = {c.id: c.teacher for c in inst.courses}
    for a, b in combinations(given, 2):
        if teacher[a] == teacher[b] or curricula[a] & curricula[b]:
            hard["conflicts"] += len({t for t, _ in given[a]} & {t for t, _ in given[b]})
    for q in inst.curricula:
        busy = {t for c in q.courses for t, _ in given[c]}
        for t in busy:
            alone = not ((t % ppd > 0 and t - 1 in busy) or (t % ppd < ppd - 1 and t + 1 in busy))
            soft["curriculum_compactness"] += 2 * alone
    return hard, soft

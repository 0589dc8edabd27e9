"""Random instances with a planted feasible timetable, and the bundled samples.

:func:`generate_instance` first places every lecture in a free room and period (a course's
lectures in different periods), then derives the constraints from that placement: teachers
and curricula only group courses that never share a period, and unavailability only covers
periods a course does not use. So the planted timetable has no hard violation, and a solver
must be able to find one. Pure Python (``random.Random``): the same seed gives the same instance.
"""

from __future__ import annotations

import random
from importlib import resources
from typing import Any

from modelq.workloads.timetable.problem import Course, Curriculum, Instance, Room, Unavailability

SAMPLES = ("small", "medium")


def generate_instance(
    seed: int = 0,
    *,
    courses: int = 12,
    rooms: int = 3,
    days: int = 5,
    periods_per_day: int = 4,
    fill: float = 0.6,
    max_lectures: int = 5,
    curricula: int = 4,
    curriculum_size: int = 4,
    unavailability: int = 10,
    name: str | None = None,
) -> tuple[Instance, list[dict[str, Any]]]:
    """An instance and its planted feasible timetable.

    Args:
        fill: the share of the period x room slots the lectures should take (the planted
            timetable is denser, hence harder to find, when this is higher).

    Returns:
        (instance, assignments): the assignments (course, lecture, day, period, room) have
        zero hard violations.
    """
    rng = random.Random(seed)
    T = days * periods_per_day
    capacities = sorted(rng.choice((30, 40, 60, 80, 120)) for _ in range(rooms))
    room_ids = [f"R{r:02d}" for r in range(rooms)]
    free = {(t, r) for t in range(T) for r in range(rooms)}
    budget = int(fill * T * rooms)
    plan: list[list[tuple[int, int]]] = []
    for c in range(courses):
        remaining = courses - c
        wanted = max(1, min(max_lectures, round(budget / remaining) if remaining else 1, rng.randint(1, max_lectures)))
        open_periods = sorted({t for t, _r in free})
        rng.shuffle(open_periods)
        slots = []
        for t in open_periods[:wanted]:
            room = rng.choice(sorted(r for tt, r in free if tt == t))
            free.discard((t, room))
            slots.append((t, room))
        if not slots:
            break
        budget -= len(slots)
        plan.append(sorted(slots))
    n = len(plan)
    periods_of = [{t for t, _r in slots} for slots in plan]

    # Teachers: a teacher only gets courses whose periods never meet.
    teacher_of: list[str] = [""] * n
    busy: dict[str, set[int]] = {}
    for c in rng.sample(range(n), n):
        options = sorted(t for t, used in busy.items() if not used & periods_of[c])
        if options and rng.random() < 0.5:
            teacher = rng.choice(options)
        else:
            teacher = f"T{len(busy):02d}"
            busy[teacher] = set()
        busy[teacher] |= periods_of[c]
        teacher_of[c] = teacher

    # Curricula: courses whose periods never meet.
    groups: list[list[int]] = []
    for _ in range(curricula):
        members = [rng.randrange(n)]
        used = set(periods_of[members[0]])
        for c in rng.sample(range(n), n):
            if len(members) >= curriculum_size:
                break
            if c not in members and not used & periods_of[c]:
                members.append(c)
                used |= periods_of[c]
        if len(members) > 1:
            groups.append(sorted(members))

    course_ids = [f"C{c:03d}" for c in range(n)]
    built = []
    for c, slots in enumerate(plan):
        smallest = min(capacities[r] for _t, r in slots)
        used_days = len({t // periods_per_day for t, _r in slots})
        built.append(
            Course(
                course_ids[c],
                teacher_of[c],
                len(slots),
                rng.randint(1, used_days),
                rng.randint(max(1, smallest // 2), smallest),
            )
        )
    blocked = []
    candidates = [(c, t) for c in range(n) for t in range(T) if t not in periods_of[c]]
    for c, t in sorted(rng.sample(candidates, min(unavailability, len(candidates)))):
        blocked.append(Unavailability(course_ids[c], t // periods_per_day, t % periods_per_day))
    instance = Instance(
        name=name or f"planted-{seed}",
        days=days,
        periods_per_day=periods_per_day,
        courses=tuple(built),
        rooms=tuple(Room(room_ids[r], capacities[r]) for r in range(rooms)),
        curricula=tuple(Curriculum(f"Q{q:02d}", tuple(course_ids[c] for c in g)) for q, g in enumerate(groups)),
        unavailability=tuple(blocked),
    ).validate()
    planted = [
        {
            "course": course_ids[c],
            "lecture": i,
            "day": t // periods_per_day,
            "period": t % periods_per_day,
            "room": room_ids[r],
        }
        for c, slots in enumerate(plan)
        for i, (t, r) in enumerate(slots)
    ]
    return instance, planted


def sample(name: str = "small") -> str:
    """The ``.ctt`` text of a bundled sample instance (``small`` or ``medium``)."""
    if name not in SAMPLES:
        raise ValueError(f"unknown sample {name!r}; samples: {', '.join(SAMPLES)}")
    return resources.files("modelq.workloads.timetable").joinpath("samples", f"{name}.ctt").read_text()


def write_samples(folder: str) -> None:
    """Regenerate the bundled samples (how ``samples/*.ctt`` were made)."""
    from pathlib import Path

    from modelq.workloads.timetable.ctt import format_ctt

    specs = {
        "small": {"seed": 1, "courses": 10, "rooms": 3, "days": 5, "periods_per_day": 4, "fill": 0.55},
        "medium": {
            "seed": 2,
            "courses": 30,
            "rooms": 6,
            "days": 5,
            "periods_per_day": 6,
            "fill": 0.6,
            "curricula": 12,
            "curriculum_size": 5,
            "unavailability": 40,
        },
    }
    for name, spec in specs.items():
        instance, _planted = generate_instance(**spec, name=name)
        (Path(folder) / f"{name}.ctt").write_text(format_ctt(instance))

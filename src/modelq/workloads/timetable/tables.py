"""An instance as numpy arrays: what the evaluator and the GA index into.

Built once per instance (cached on it). Courses, rooms, periods and lectures are numbered as in
the instance; a slot is ``period * rooms + room``.
"""

from __future__ import annotations

from dataclasses import dataclass

from modelq.workloads.timetable._numpy import np
from modelq.workloads.timetable.problem import Instance


@dataclass(frozen=True, eq=False)
class Tables:
    courses: int
    rooms: int
    days: int
    periods_per_day: int
    periods: int
    lectures: int
    curricula: int
    #: (L,) course of each lecture
    lecture_course: np.ndarray
    #: (C,) minimum working days
    min_working_days: np.ndarray
    #: (C, R) students over capacity when a lecture of the course sits in the room
    excess: np.ndarray
    #: (C, T) 1 where the course must not be taught
    unavailable: np.ndarray
    #: (C, C) 1 where two courses share a curriculum or a teacher, or are the same course
    conflict: np.ndarray
    #: conflicting course pairs i < j (shared curriculum or teacher), for counting
    pair_i: np.ndarray
    pair_j: np.ndarray
    #: (Q, C) curriculum membership
    member: np.ndarray
    #: courses of every curriculum one after the other, and where each curriculum starts
    member_courses: np.ndarray
    member_offsets: np.ndarray
    #: curriculum of each entry of member_courses
    member_curriculum: np.ndarray
    #: (T,) day of each period
    day_of_period: np.ndarray
    #: (L,) how hard a lecture is to place (conflicting lectures plus unavailable periods)
    difficulty: np.ndarray


def tables_of(instance: Instance) -> Tables:
    """The arrays of ``instance`` (built on first use, then cached on the instance)."""
    cached = instance.__dict__.get("_tables")
    if cached is None:
        cached = _build(instance)
        instance.__dict__["_tables"] = cached  # a frozen dataclass still has a __dict__
    return cached


def _build(instance: Instance) -> Tables:
    C, R = len(instance.courses), len(instance.rooms)
    T, ppd = instance.periods, instance.periods_per_day
    index = instance.course_index
    lecture_course = np.asarray(instance.course_of_lecture, dtype=np.int64)
    students = np.asarray([c.students for c in instance.courses], dtype=np.int64)
    capacity = np.asarray([r.capacity for r in instance.rooms], dtype=np.int64)
    unavailable = np.zeros((C, T), dtype=np.int64)
    for u in instance.unavailability:
        unavailable[index[u.course], u.day * ppd + u.period] = 1
    member = np.zeros((len(instance.curricula), C), dtype=np.int64)
    for q, curriculum in enumerate(instance.curricula):
        for course in curriculum.courses:
            member[q, index[course]] = 1
    conflict = ((member.T @ member) > 0).astype(np.int64)
    teachers = np.asarray([c.teacher for c in instance.courses])
    conflict |= (teachers[:, None] == teachers[None, :]).astype(np.int64)
    np.fill_diagonal(conflict, 1)
    pair_i, pair_j = np.nonzero(np.triu(conflict, k=1))
    member_courses = np.concatenate([np.nonzero(row)[0] for row in member]) if len(member) else np.zeros(0, np.int64)
    sizes = member.sum(axis=1)
    member_offsets = (
        np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64) if len(member) else np.zeros(0, np.int64)
    )
    lectures_per_course = np.asarray([c.lectures for c in instance.courses], dtype=np.int64)
    course_difficulty = conflict @ lectures_per_course + unavailable.sum(axis=1)
    return Tables(
        courses=C,
        rooms=R,
        days=instance.days,
        periods_per_day=ppd,
        periods=T,
        lectures=len(lecture_course),
        curricula=len(instance.curricula),
        lecture_course=lecture_course,
        min_working_days=np.asarray([c.min_working_days for c in instance.courses], dtype=np.int64),
        excess=np.maximum(students[:, None] - capacity[None, :], 0),
        unavailable=unavailable,
        conflict=conflict,
        pair_i=pair_i.astype(np.int64),
        pair_j=pair_j.astype(np.int64),
        member=member,
        member_courses=member_courses.astype(np.int64),
        member_offsets=member_offsets,
        member_curriculum=np.repeat(np.arange(len(member)), sizes).astype(np.int64),
        day_of_period=np.arange(T, dtype=np.int64) // ppd,
        difficulty=course_difficulty[lecture_course],
    )

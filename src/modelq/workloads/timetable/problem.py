"""The course timetabling problem (ITC-2007 curriculum-based track) and its JSON form.

An :class:`Instance` is plain, immutable data: days x periods per day, rooms with a capacity,
courses (teacher, lectures per week, minimum working days, students), curricula (courses whose
lectures must not overlap) and unavailability constraints (a course may not be taught in a
period). Pure Python on purpose: the API and the submit path validate instances without
importing numpy.

Each course's lectures are numbered 0..lectures-1; lecture ``l`` of the whole instance belongs to
course ``course_of_lecture[l]``. A period is ``day * periods_per_day + period_of_day``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from modelq.errors import InvalidInput

#: Limits that keep one job's memory and message sizes bounded (a period x room slot is packed in 16 bits).
MAX_COURSES = 2000
MAX_LECTURES = 10000
MAX_ROOMS = 1000
MAX_DAYS = 14
MAX_PERIODS_PER_DAY = 24
MAX_SLOTS = 65535


@dataclass(frozen=True)
class Course:
    id: str
    teacher: str
    lectures: int
    min_working_days: int
    students: int


@dataclass(frozen=True)
class Room:
    id: str
    capacity: int


@dataclass(frozen=True)
class Curriculum:
    id: str
    courses: tuple[str, ...]


@dataclass(frozen=True)
class Unavailability:
    course: str
    day: int
    period: int


@dataclass(frozen=True)
class Instance:
    """One timetabling problem. Build it with :func:`instance_from_dict`, :func:`~.ctt.parse_ctt`
    or directly and then call :meth:`validate`."""

    name: str
    days: int
    periods_per_day: int
    courses: tuple[Course, ...]
    rooms: tuple[Room, ...]
    curricula: tuple[Curriculum, ...] = ()
    unavailability: tuple[Unavailability, ...] = ()

    # Derived values -------------------------------------------------------------------

    @property
    def periods(self) -> int:
        return self.days * self.periods_per_day

    @cached_property
    def course_index(self) -> dict[str, int]:
        return {course.id: i for i, course in enumerate(self.courses)}

    @cached_property
    def room_index(self) -> dict[str, int]:
        return {room.id: i for i, room in enumerate(self.rooms)}

    @cached_property
    def lecture_offsets(self) -> tuple[int, ...]:
        """Where each course's lectures start in the instance-wide lecture numbering."""
        offsets, total = [], 0
        for course in self.courses:
            offsets.append(total)
            total += course.lectures
        return tuple(offsets)

    @property
    def lectures(self) -> int:
        return sum(course.lectures for course in self.courses)

    @cached_property
    def course_of_lecture(self) -> tuple[int, ...]:
        return tuple(c for c, course in enumerate(self.courses) for _ in range(course.lectures))

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "courses": len(self.courses),
            "lectures": self.lectures,
            "rooms": len(self.rooms),
            "days": self.days,
            "periods_per_day": self.periods_per_day,
            "curricula": len(self.curricula),
            "unavailability": len(self.unavailability),
        }

    # Validation -----------------------------------------------------------------------

    def validate(self, field: str = "instance") -> Instance:
        """Check sizes, identifiers and references.

        Raises:
            InvalidInput: naming the offending field, e.g. ``instance.courses[3].lectures``.
        """
        _positive(self.days, f"{field}.days", MAX_DAYS)
        _positive(self.periods_per_day, f"{field}.periods_per_day", MAX_PERIODS_PER_DAY)
        if not self.courses:
            raise InvalidInput("an instance needs at least one course", field=f"{field}.courses")
        if not self.rooms:
            raise InvalidInput("an instance needs at least one room", field=f"{field}.rooms")
        if len(self.courses) > MAX_COURSES:
            raise InvalidInput(f"at most {MAX_COURSES} courses, got {len(self.courses)}", field=f"{field}.courses")
        if len(self.rooms) > MAX_ROOMS:
            raise InvalidInput(f"at most {MAX_ROOMS} rooms, got {len(self.rooms)}", field=f"{field}.rooms")
        if self.periods * len(self.rooms) > MAX_SLOTS:
            raise InvalidInput(
                f"days x periods_per_day x rooms must be at most {MAX_SLOTS}, got {self.periods * len(self.rooms)}",
                field=f"{field}.rooms",
            )
        seen: set[str] = set()
        for i, course in enumerate(self.courses):
            where = f"{field}.courses[{i}]"
            _identifier(course.id, f"{where}.id", seen)
            _identifier(course.teacher, f"{where}.teacher")
            _positive(course.lectures, f"{where}.lectures", self.periods)
            _non_negative(course.min_working_days, f"{where}.min_working_days", self.days)
            _non_negative(course.students, f"{where}.students")
        if self.lectures > MAX_LECTURES:
            raise InvalidInput(f"at most {MAX_LECTURES} lectures in all, got {self.lectures}", field=f"{field}.courses")
        seen = set()
        for i, room in enumerate(self.rooms):
            _identifier(room.id, f"{field}.rooms[{i}].id", seen)
            _non_negative(room.capacity, f"{field}.rooms[{i}].capacity")
        seen = set()
        for i, curriculum in enumerate(self.curricula):
            where = f"{field}.curricula[{i}]"
            _identifier(curriculum.id, f"{where}.id", seen)
            if not curriculum.courses:
                raise InvalidInput(f"curriculum {curriculum.id!r} lists no course", field=f"{where}.courses")
            for j, course in enumerate(curriculum.courses):
                if course not in self.course_index:
                    raise InvalidInput(
                        f"curriculum {curriculum.id!r} names unknown course {course!r}", field=f"{where}.courses[{j}]"
                    )
        for i, item in enumerate(self.unavailability):
            where = f"{field}.unavailability[{i}]"
            if item.course not in self.course_index:
                raise InvalidInput(f"unknown course {item.course!r}", field=f"{where}.course")
            _non_negative(item.day, f"{where}.day", self.days - 1)
            _non_negative(item.period, f"{where}.period", self.periods_per_day - 1)
        return self


def _positive(value: Any, field: str, maximum: int | None = None) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidInput(f"must be a positive integer, got {value!r}", field=field)
    if maximum is not None and value > maximum:
        raise InvalidInput(f"must be at most {maximum}, got {value}", field=field)


def _non_negative(value: Any, field: str, maximum: int | None = None) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidInput(f"must be a non-negative integer, got {value!r}", field=field)
    if maximum is not None and value > maximum:
        raise InvalidInput(f"must be at most {maximum}, got {value}", field=field)


def _identifier(value: Any, field: str, seen: set[str] | None = None) -> None:
    if not isinstance(value, str) or not value or any(ch.isspace() for ch in value):
        raise InvalidInput(f"must be a non-empty name without spaces, got {value!r}", field=field)
    if seen is not None:
        if value in seen:
            raise InvalidInput(f"duplicate name {value!r}", field=field)
        seen.add(value)


# The JSON form ----------------------------------------------------------------------------


def instance_to_dict(instance: Instance) -> dict[str, Any]:
    """The JSON form of an instance (what :func:`instance_from_dict` reads)."""
    return {
        "name": instance.name,
        "days": instance.days,
        "periods_per_day": instance.periods_per_day,
        "courses": [
            {
                "id": c.id,
                "teacher": c.teacher,
                "lectures": c.lectures,
                "min_working_days": c.min_working_days,
                "students": c.students,
            }
            for c in instance.courses
        ],
        "rooms": [{"id": r.id, "capacity": r.capacity} for r in instance.rooms],
        "curricula": [{"id": q.id, "courses": list(q.courses)} for q in instance.curricula],
        "unavailability": [{"course": u.course, "day": u.day, "period": u.period} for u in instance.unavailability],
    }


def instance_from_dict(data: Any, field: str = "instance") -> Instance:
    """Read the JSON form.

    Raises:
        InvalidInput: naming the offending field, e.g. ``instance.rooms[2].capacity``.
    """
    obj = _object(
        data,
        field,
        required=("days", "periods_per_day", "courses", "rooms"),
        optional=("name", "curricula", "unavailability"),
    )
    courses = []
    for i, item in enumerate(_list(obj["courses"], f"{field}.courses")):
        where = f"{field}.courses[{i}]"
        c = _object(item, where, required=("id", "lectures"), optional=("teacher", "min_working_days", "students"))
        courses.append(
            Course(
                id=c["id"],
                teacher=c.get("teacher", f"teacher-of-{c['id']}"),
                lectures=c["lectures"],
                min_working_days=c.get("min_working_days", 1),
                students=c.get("students", 0),
            )
        )
    rooms = []
    for i, item in enumerate(_list(obj["rooms"], f"{field}.rooms")):
        r = _object(item, f"{field}.rooms[{i}]", required=("id", "capacity"))
        rooms.append(Room(id=r["id"], capacity=r["capacity"]))
    curricula = []
    for i, item in enumerate(_list(obj.get("curricula", []), f"{field}.curricula")):
        where = f"{field}.curricula[{i}]"
        q = _object(item, where, required=("id", "courses"))
        curricula.append(Curriculum(id=q["id"], courses=tuple(_list(q["courses"], f"{where}.courses"))))
    unavailability = []
    for i, item in enumerate(_list(obj.get("unavailability", []), f"{field}.unavailability")):
        u = _object(item, f"{field}.unavailability[{i}]", required=("course", "day", "period"))
        unavailability.append(Unavailability(course=u["course"], day=u["day"], period=u["period"]))
    name = obj.get("name", "timetable")
    if not isinstance(name, str):
        raise InvalidInput(f"must be a string, got {name!r}", field=f"{field}.name")
    instance = Instance(
        name=name,
        days=obj["days"],
        periods_per_day=obj["periods_per_day"],
        courses=tuple(courses),
        rooms=tuple(rooms),
        curricula=tuple(curricula),
        unavailability=tuple(unavailability),
    )
    return instance.validate(field)


def _object(data: Any, field: str, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise InvalidInput(f"must be an object, got {type(data).__name__}", field=field)
    for key in required:
        if key not in data:
            raise InvalidInput(f"missing required key {key!r}", field=f"{field}.{key}")
    unknown = sorted(set(data) - set(required) - set(optional))
    if unknown:
        raise InvalidInput(
            f"unknown key {unknown[0]!r}; known keys: {', '.join((*required, *optional))}",
            field=f"{field}.{unknown[0]}",
        )
    return data


def _list(data: Any, field: str) -> list[Any]:
    if not isinstance(data, list):
        raise InvalidInput(f"must be a list, got {type(data).__name__}", field=field)
    return data

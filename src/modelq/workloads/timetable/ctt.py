"""The ITC-2007 curriculum-based timetabling text format (``.ctt``) and its solution format.

An instance file::

    Name: Toy
    Courses: 4
    Rooms: 3
    Days: 5
    Periods_per_day: 4
    Curricula: 2
    Constraints: 8

    COURSES:
    SceCosC Ocra 3 3 30          <course> <teacher> <lectures> <min_working_days> <students>

    ROOMS:
    A 32                         <room> <capacity>

    CURRICULA:
    Cur1 3 SceCosC ArcTec TecCos <curriculum> <number of courses> <course>...

    UNAVAILABILITY_CONSTRAINTS:
    TecCos 2 0                   <course> <day> <period of the day>

    END.

A solution has one line per lecture: ``<course> <room> <day> <period of the day>``.
Every error names the line and what was expected there.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from modelq.errors import InvalidInput
from modelq.workloads.timetable.problem import Course, Curriculum, Instance, Room, Unavailability

HEADER = ("Name", "Courses", "Rooms", "Days", "Periods_per_day", "Curricula", "Constraints")
SECTIONS = ("COURSES", "ROOMS", "CURRICULA", "UNAVAILABILITY_CONSTRAINTS")
_SHAPES = {
    "COURSES": "<course> <teacher> <lectures> <min_working_days> <students>",
    "ROOMS": "<room> <capacity>",
    "CURRICULA": "<curriculum> <number of courses> <course> ...",
    "UNAVAILABILITY_CONSTRAINTS": "<course> <day> <period>",
}
_COUNT_KEY = {
    "COURSES": "Courses",
    "ROOMS": "Rooms",
    "CURRICULA": "Curricula",
    "UNAVAILABILITY_CONSTRAINTS": "Constraints",
}


def _error(line: int, message: str, field: str = "ctt") -> InvalidInput:
    """A ``.ctt`` text that does not parse: an :class:`InvalidInput` whose message starts with
    ``line N:`` (and whose ``line`` detail is N)."""
    return InvalidInput(f"line {line}: {message}", field=field, line=line)


def _lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, stripped text) of every non-blank line."""
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line:
            yield number, line


def _int(token: str, what: str, number: int, field: str) -> int:
    try:
        value = int(token)
    except ValueError:
        raise _error(number, f"{what} must be an integer, got {token!r}", field) from None
    if value < 0:
        raise _error(number, f"{what} must not be negative, got {value}", field)
    return value


def parse_ctt(text: str, field: str = "ctt") -> Instance:
    """Read an ITC-2007 ``.ctt`` instance.

    Raises:
        InvalidInput: a line that does not parse (the message starts with ``line N:`` and says
            what was expected there), or an instance that breaks a limit (e.g. too many lectures).
    """
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput("the .ctt text is empty", field=field)
    lines = list(_lines(text))
    last = lines[-1][0] if lines else 1
    pos = 0
    header: dict[str, Any] = {}
    for key in HEADER:
        if pos >= len(lines):
            raise _error(last, f"expected '{key}: <value>' in the header, found the end of the text", field)
        number, line = lines[pos]
        name, sep, value = line.partition(":")
        if not sep or name.strip() != key or not value.strip():
            raise _error(number, f"expected '{key}: <value>' in the header, got {line!r}", field)
        header[key] = value.strip() if key == "Name" else _int(value.strip(), key, number, field)
        pos += 1

    rows: dict[str, list[tuple[int, list[str]]]] = {}
    for section in SECTIONS:
        if pos >= len(lines):
            raise _error(last, f"expected '{section}:', found the end of the text", field)
        number, line = lines[pos]
        if line != f"{section}:":
            raise _error(number, f"expected '{section}:', got {line!r}", field)
        pos += 1
        expected = header[_COUNT_KEY[section]]
        rows[section] = []
        for _ in range(expected):
            if pos >= len(lines) or lines[pos][1].endswith(":") or lines[pos][1] == "END.":
                where = lines[pos][0] if pos < len(lines) else last
                found = repr(lines[pos][1]) if pos < len(lines) else "the end of the text"
                raise _error(
                    where,
                    f"expected {expected} line(s) '{_SHAPES[section]}' after '{section}:' "
                    f"({_COUNT_KEY[section]}: {expected} in the header), found {found} after "
                    f"{len(rows[section])}",
                    field,
                )
            rows[section].append((lines[pos][0], lines[pos][1].split()))
            pos += 1
    if pos >= len(lines):
        raise _error(last, "expected 'END.', found the end of the text", field)
    if lines[pos][1] != "END.":
        raise _error(lines[pos][0], f"expected 'END.' (all counts in the header are met), got {lines[pos][1]!r}", field)
    if pos + 1 < len(lines):
        raise _error(lines[pos + 1][0], f"expected nothing after 'END.', got {lines[pos + 1][1]!r}", field)

    courses, known = [], set()
    for number, parts in rows["COURSES"]:
        _shape(parts, 5, "COURSES", number, field)
        if parts[0] in known:
            raise _error(number, f"duplicate course {parts[0]!r}", field)
        known.add(parts[0])
        lectures = _int(parts[2], "<lectures>", number, field)
        if lectures < 1:
            raise _error(number, f"<lectures> must be at least 1, got {lectures}", field)
        courses.append(
            Course(
                parts[0],
                parts[1],
                lectures,
                _int(parts[3], "<min_working_days>", number, field),
                _int(parts[4], "<students>", number, field),
            )
        )
    rooms, room_names = [], set()
    for number, parts in rows["ROOMS"]:
        _shape(parts, 2, "ROOMS", number, field)
        if parts[0] in room_names:
            raise _error(number, f"duplicate room {parts[0]!r}", field)
        room_names.add(parts[0])
        rooms.append(Room(parts[0], _int(parts[1], "<capacity>", number, field)))
    curricula = []
    for number, parts in rows["CURRICULA"]:
        if len(parts) < 3:
            raise _error(number, f"expected '{_SHAPES['CURRICULA']}', got {' '.join(parts)!r}", field)
        size = _int(parts[1], "<number of courses>", number, field)
        if len(parts) != size + 2:
            raise _error(number, f"curriculum {parts[0]!r} says {size} course(s) but lists {len(parts) - 2}", field)
        for course in parts[2:]:
            if course not in known:
                raise _error(number, f"curriculum {parts[0]!r} names unknown course {course!r}", field)
        curricula.append(Curriculum(parts[0], tuple(parts[2:])))
    unavailability = []
    for number, parts in rows["UNAVAILABILITY_CONSTRAINTS"]:
        _shape(parts, 3, "UNAVAILABILITY_CONSTRAINTS", number, field)
        if parts[0] not in known:
            raise _error(number, f"unavailability names unknown course {parts[0]!r}", field)
        day = _int(parts[1], "<day>", number, field)
        period = _int(parts[2], "<period>", number, field)
        if day >= header["Days"] or period >= header["Periods_per_day"]:
            raise _error(
                number,
                f"day {day} period {period} is outside {header['Days']} day(s) x {header['Periods_per_day']} period(s)",
                field,
            )
        unavailability.append(Unavailability(parts[0], day, period))
    instance = Instance(
        name=header["Name"],
        days=header["Days"],
        periods_per_day=header["Periods_per_day"],
        courses=tuple(courses),
        rooms=tuple(rooms),
        curricula=tuple(curricula),
        unavailability=tuple(unavailability),
    )
    return instance.validate(field)


def _shape(parts: list[str], size: int, section: str, number: int, field: str) -> None:
    if len(parts) != size:
        raise _error(
            number, f"expected '{_SHAPES[section]}' ({size} fields), got {len(parts)}: {' '.join(parts)!r}", field
        )


def format_ctt(instance: Instance) -> str:
    """Write an instance as ITC-2007 ``.ctt`` text (what :func:`parse_ctt` reads back)."""
    out = [
        f"Name: {instance.name}",
        f"Courses: {len(instance.courses)}",
        f"Rooms: {len(instance.rooms)}",
        f"Days: {instance.days}",
        f"Periods_per_day: {instance.periods_per_day}",
        f"Curricula: {len(instance.curricula)}",
        f"Constraints: {len(instance.unavailability)}",
        "",
        "COURSES:",
    ]
    out += [f"{c.id} {c.teacher} {c.lectures} {c.min_working_days} {c.students}" for c in instance.courses]
    out += ["", "ROOMS:"] + [f"{r.id} {r.capacity}" for r in instance.rooms]
    out += ["", "CURRICULA:"] + [f"{q.id} {len(q.courses)} {' '.join(q.courses)}" for q in instance.curricula]
    out += ["", "UNAVAILABILITY_CONSTRAINTS:"] + [f"{u.course} {u.day} {u.period}" for u in instance.unavailability]
    out += ["", "END.", ""]
    return "\n".join(out)


def format_solution(assignments: Iterable[dict[str, Any]]) -> str:
    """Write assignments (``course``, ``room``, ``day``, ``period``) in the ITC-2007 solution format."""
    return "".join(f"{a['course']} {a['room']} {a['day']} {a['period']}\n" for a in assignments)


def parse_solution(instance: Instance, text: str, field: str = "solution") -> list[dict[str, Any]]:
    """Read an ITC-2007 solution: one ``<course> <room> <day> <period>`` line per lecture.

    Returns:
        Assignments with ``course``, ``lecture`` (numbered per course in file order), ``day``,
        ``period`` and ``room``.

    Raises:
        InvalidInput: a line that does not parse or names an unknown course or room (``line N:``).
    """
    seen: dict[str, int] = {}
    out = []
    for number, line in _lines(text):
        parts = line.split()
        if len(parts) != 4:
            raise _error(number, f"expected '<course> <room> <day> <period>', got {line!r}", field)
        course, room = parts[0], parts[1]
        if course not in instance.course_index:
            raise _error(number, f"unknown course {course!r}", field)
        if room not in instance.room_index:
            raise _error(number, f"unknown room {room!r}", field)
        day, period = _int(parts[2], "<day>", number, field), _int(parts[3], "<period>", number, field)
        if day >= instance.days or period >= instance.periods_per_day:
            raise _error(
                number,
                f"day {day} period {period} is outside {instance.days} day(s) x {instance.periods_per_day} period(s)",
                field,
            )
        out.append({"course": course, "lecture": seen.get(course, 0), "day": day, "period": period, "room": room})
        seen[course] = seen.get(course, 0) + 1
    return out

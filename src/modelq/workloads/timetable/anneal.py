"""Simulated annealing on one timetable, with incremental cost updates: each island's local search.

A step takes one lecture to another period and room, swapping it with the lecture there if any.
It never re-evaluates the timetable: the state keeps, per period, how many lectures each room,
course and curriculum has there, per course how many lectures fall on each day and in each room,
and a step changes only the few counts it touches, so its cost difference (hard violations,
weighted by the schedule's ``hard_weight``, and the ITC-2007 soft penalties) costs
O(conflicting courses), not O(lectures). Every score agrees with :mod:`.scoring` (a test
recounts it there).

Why numba: the inner loop is millions of tiny, data-dependent steps (one random move, a dozen
array reads, accept or undo). numpy pays its per-call overhead on every step and cannot batch
them, since each step depends on the one before; numba compiles the loop to machine code, a
hundred times faster than the same loop in Python. The compiled code is cached next to this
module after the first run (``cache=True``).

The annealing runs in chunks of iterations, so a caller can stop at a deadline
(:func:`anneal`), and everything random comes from one seed: a fixed number of iterations gives
the same timetable every time.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from numba import njit

from modelq.workloads.timetable._numpy import np
from modelq.workloads.timetable.scoring import SOFT_WEIGHTS
from modelq.workloads.timetable.tables import Tables

#: The counting code adds a hard violation as this many units, so one integer carries both parts
#: (soft penalties, of one step or of a whole timetable, stay far below it): ``divmod`` splits them.
HARD_UNIT = 1 << 20
_MWD = SOFT_WEIGHTS["min_working_days"]
_COMPACT = SOFT_WEIGHTS["curriculum_compactness"]


@dataclass(frozen=True, eq=False)
class Graph:
    """What the inner loop indexes beyond :class:`.tables.Tables`: per course, its conflicting
    courses (shared curriculum or teacher, itself excluded) and its curricula, as CSR lists."""

    neighbours: np.ndarray
    neighbour_offsets: np.ndarray
    curricula: np.ndarray
    curriculum_offsets: np.ndarray


def graph_of(tb: Tables) -> Graph:
    conflict = tb.conflict.copy()
    np.fill_diagonal(conflict, 0)
    neighbours = [np.nonzero(row)[0] for row in conflict]
    curricula = (
        [np.nonzero(tb.member[:, c])[0] for c in range(tb.courses)]
        if tb.curricula
        else [np.zeros(0, np.int64) for _ in range(tb.courses)]
    )

    def csr(lists: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        offsets = np.zeros(len(lists) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(x) for x in lists])
        flat = np.concatenate(lists).astype(np.int64) if offsets[-1] else np.zeros(0, np.int64)
        return flat, offsets

    n, no = csr(neighbours)
    q, qo = csr(curricula)
    return Graph(n, no, q, qo)


@dataclass
class State:
    """One timetable and the counts its moves update (see the module docstring)."""

    period: np.ndarray
    room: np.ndarray
    room_period: np.ndarray  # (R, T)
    course_period: np.ndarray  # (C, T)
    curriculum_period: np.ndarray  # (Q, T)
    course_day: np.ndarray  # (C, D)
    course_room: np.ndarray  # (C, R)
    days_used: np.ndarray  # (C,)
    rooms_used: np.ndarray  # (C,)
    #: hard violations and soft penalties of the timetable
    scores: tuple[int, int] = (0, 0)


def new_state(tb: Tables, g: Graph, period: np.ndarray, room: np.ndarray) -> State:
    """The state of a complete timetable (every lecture placed)."""
    Q = max(tb.curricula, 1)
    s = State(
        period=np.asarray(period, dtype=np.int64).copy(),
        room=np.asarray(room, dtype=np.int64).copy(),
        room_period=np.zeros((tb.rooms, tb.periods), np.int64),
        course_period=np.zeros((tb.courses, tb.periods), np.int64),
        curriculum_period=np.zeros((Q, tb.periods), np.int64),
        course_day=np.zeros((tb.courses, tb.days), np.int64),
        course_room=np.zeros((tb.courses, tb.rooms), np.int64),
        days_used=np.zeros(tb.courses, np.int64),
        rooms_used=np.zeros(tb.courses, np.int64),
    )
    total = _base_cost(tb.min_working_days)
    for lecture in range(tb.lectures):
        total += _add(lecture, s.period[lecture], s.room[lecture], *_arrays(tb, g, s))
    hard, soft = divmod(int(total), HARD_UNIT)
    s.scores = (hard, soft)
    return s


def _base_cost(min_working_days: np.ndarray) -> int:
    """The cost of an empty timetable, less its unplaced lectures: every course short of all its days."""
    return int(min_working_days.sum()) * _MWD


def _arrays(tb: Tables, g: Graph, s: State) -> tuple:
    return (
        tb.lecture_course,
        tb.day_of_period,
        tb.periods_per_day,
        tb.unavailable,
        tb.excess,
        tb.min_working_days,
        g.neighbours,
        g.neighbour_offsets,
        g.curricula,
        g.curriculum_offsets,
        s.room_period,
        s.course_period,
        s.curriculum_period,
        s.course_day,
        s.course_room,
        s.days_used,
        s.rooms_used,
        HARD_UNIT,
    )


# The inner loop (compiled) -------------------------------------------------------------------


@njit(cache=True, inline="always")
def _isolated(cp: np.ndarray, q: int, t: int, ppd: int) -> int:
    """1 when curriculum ``q`` is busy at ``t`` with no lecture just before or after on that day."""
    if cp[q, t] == 0:
        return 0
    slot = t % ppd
    if slot > 0 and cp[q, t - 1] > 0:
        return 0
    if slot < ppd - 1 and cp[q, t + 1] > 0:
        return 0
    return 1


@njit(cache=True, inline="always")
def _window(cp: np.ndarray, q: int, t: int, ppd: int) -> int:
    """Isolated periods of curriculum ``q`` among ``t`` and its neighbours on the same day."""
    total = _isolated(cp, q, t, ppd)
    slot = t % ppd
    if slot > 0:
        total += _isolated(cp, q, t - 1, ppd)
    if slot < ppd - 1:
        total += _isolated(cp, q, t + 1, ppd)
    return total


@njit(cache=True, inline="always")
def _add(
    lecture,
    t,
    r,
    lecture_course,
    day_of_period,
    ppd,
    unavailable,
    excess,
    mwd,
    nb,
    nbo,
    cq,
    cqo,
    rp,
    crp,
    qp,
    cd,
    cr,
    days_used,
    rooms_used,
    hard,
):
    """Place ``lecture`` at period ``t`` in room ``r``; returns the change in cost."""
    c = lecture_course[lecture]
    d = day_of_period[t]
    delta = 0
    if rp[r, t] > 0:
        delta += hard  # room occupancy
    rp[r, t] += 1
    if crp[c, t] > 0:
        delta += hard  # two lectures of a course in one period
    else:
        for k in range(nbo[c], nbo[c + 1]):
            if crp[nb[k], t] > 0:
                delta += hard  # a conflicting course already there
        for k in range(cqo[c], cqo[c + 1]):
            q = cq[k]
            if qp[q, t] == 0:
                before = _window(qp, q, t, ppd)
                qp[q, t] += 1
                delta += (_window(qp, q, t, ppd) - before) * _COMPACT
            else:
                qp[q, t] += 1
    crp[c, t] += 1
    if unavailable[c, t]:
        delta += hard
    delta += excess[c, r]
    if cr[c, r] == 0:
        if rooms_used[c] > 0:
            delta += 1  # room stability
        rooms_used[c] += 1
    cr[c, r] += 1
    if cd[c, d] == 0:
        days_used[c] += 1
        if days_used[c] <= mwd[c]:
            delta -= _MWD
    cd[c, d] += 1
    return delta


@njit(cache=True, inline="always")
def _remove(
    lecture,
    t,
    r,
    lecture_course,
    day_of_period,
    ppd,
    unavailable,
    excess,
    mwd,
    nb,
    nbo,
    cq,
    cqo,
    rp,
    crp,
    qp,
    cd,
    cr,
    days_used,
    rooms_used,
    hard,
):
    """Take ``lecture`` out of period ``t`` and room ``r``; returns the change in cost."""
    c = lecture_course[lecture]
    d = day_of_period[t]
    delta = 0
    rp[r, t] -= 1
    if rp[r, t] > 0:
        delta -= hard
    crp[c, t] -= 1
    if crp[c, t] > 0:
        delta -= hard
    else:
        for k in range(nbo[c], nbo[c + 1]):
            if crp[nb[k], t] > 0:
                delta -= hard
        for k in range(cqo[c], cqo[c + 1]):
            q = cq[k]
            if qp[q, t] == 1:
                before = _window(qp, q, t, ppd)
                qp[q, t] -= 1
                delta += (_window(qp, q, t, ppd) - before) * _COMPACT
            else:
                qp[q, t] -= 1
    if unavailable[c, t]:
        delta -= hard
    delta -= excess[c, r]
    cr[c, r] -= 1
    if cr[c, r] == 0:
        rooms_used[c] -= 1
        if rooms_used[c] > 0:
            delta -= 1
    cd[c, d] -= 1
    if cd[c, d] == 0:
        if days_used[c] <= mwd[c]:
            delta += _MWD
        days_used[c] -= 1
    return delta


@njit(cache=True)
def _relocate(
    lecture,
    t0,
    r0,
    t1,
    r1,
    lecture_course,
    day_of_period,
    ppd,
    unavailable,
    excess,
    mwd,
    nb,
    nbo,
    cq,
    cqo,
    rp,
    crp,
    qp,
    cd,
    cr,
    days_used,
    rooms_used,
    hard,
):
    """Move ``lecture`` from (``t0``, ``r0``) to (``t1``, ``r1``); returns the change in cost.
    (Not inlined: one compiled copy of the counting code keeps numba's compile time short.)"""
    delta = _remove(
        lecture,
        t0,
        r0,
        lecture_course,
        day_of_period,
        ppd,
        unavailable,
        excess,
        mwd,
        nb,
        nbo,
        cq,
        cqo,
        rp,
        crp,
        qp,
        cd,
        cr,
        days_used,
        rooms_used,
        hard,
    )
    return delta + _add(
        lecture,
        t1,
        r1,
        lecture_course,
        day_of_period,
        ppd,
        unavailable,
        excess,
        mwd,
        nb,
        nbo,
        cq,
        cqo,
        rp,
        crp,
        qp,
        cd,
        cr,
        days_used,
        rooms_used,
        hard,
    )


@njit(cache=True, inline="always")
def _clashes(lecture, t, leaving, lecture_course, unavailable, nb, nbo, crp) -> bool:
    """Whether ``lecture`` would break a hard constraint at period ``t`` (of a feasible timetable, in
    another period now) once lecture ``leaving`` (or -1) has left ``t``: its course unavailable, or
    a lecture of its own or a conflicting course there. Cheap, and it changes no count."""
    c = lecture_course[lecture]
    if unavailable[c, t] or crp[c, t] > 0:
        return True
    gone = lecture_course[leaving] if leaving >= 0 else -1
    for k in range(nbo[c], nbo[c + 1]):
        x = nb[k]
        if crp[x, t] - (1 if x == gone else 0) > 0:
            return True
    return False


@njit(cache=True)
def _chunk(
    period,
    room,
    occupant,
    best_period,
    best_room,
    hard_now,
    soft_now,
    best_hard,
    best_soft,
    weight,
    iterations,
    temperature,
    cooling,
    rooms,
    periods,
    seed,
    lecture_course,
    day_of_period,
    ppd,
    unavailable,
    excess,
    mwd,
    nb,
    nbo,
    cq,
    cqo,
    rp,
    crp,
    qp,
    cd,
    cr,
    days_used,
    rooms_used,
    hard,
):
    """``iterations`` steps of annealing from ``temperature``, cooling by ``cooling`` per step.

    A step picks a lecture and a random period and room: a move there when the room is free then,
    else a swap with the lecture that holds it. ``occupant`` is a lecture in each (room, period),
    or -1 (checked before use: with two lectures in one room it may name either). A swap takes
    ``b`` out first, so that ``a`` finds its new room free.

    A step costs ``weight`` per hard violation it adds plus the soft penalties it adds; the best
    timetable is the one with the fewest hard violations, then the least soft penalty. Once the
    timetable is feasible and the weight makes a new hard violation certain to be refused at this
    temperature, a step that would break a hard constraint is refused before it changes any count
    (:func:`_clashes`): most random steps in a good timetable are such, so this is most of the speed
    (about 2.5 million steps a second on one core here, against 0.4 million counting each one).

    Returns the hard and soft scores now, the best ones seen (``best_period``/``best_room`` hold
    that timetable), the temperature reached and the number of accepted steps.
    """
    np.random.seed(seed)
    lectures = period.shape[0]
    accepted = 0
    for _ in range(iterations):
        a = np.random.randint(lectures)
        ta, ra = period[a], room[a]
        t = np.random.randint(periods)
        r = np.random.randint(rooms)
        if t == ta and r == ra:
            continue
        b = occupant[r, t]
        if b >= 0 and (period[b] != t or room[b] != r):
            b = -1
        if b >= 0 and lecture_course[b] == lecture_course[a]:
            continue  # the same course: nothing changes
        if (
            hard_now == 0
            and t != ta
            and weight > 50.0 * temperature + 1000.0
            and (
                _clashes(a, t, b, lecture_course, unavailable, nb, nbo, crp)
                or (b >= 0 and _clashes(b, ta, a, lecture_course, unavailable, nb, nbo, crp))
            )
        ):
            temperature *= cooling
            continue  # a feasible timetable would become infeasible: rejected, as the weight makes certain
        delta = 0
        if b >= 0:
            delta += _relocate(
                b,
                t,
                r,
                ta,
                ra,
                lecture_course,
                day_of_period,
                ppd,
                unavailable,
                excess,
                mwd,
                nb,
                nbo,
                cq,
                cqo,
                rp,
                crp,
                qp,
                cd,
                cr,
                days_used,
                rooms_used,
                hard,
            )
        delta += _relocate(
            a,
            ta,
            ra,
            t,
            r,
            lecture_course,
            day_of_period,
            ppd,
            unavailable,
            excess,
            mwd,
            nb,
            nbo,
            cq,
            cqo,
            rp,
            crp,
            qp,
            cd,
            cr,
            days_used,
            rooms_used,
            hard,
        )
        dh = (delta + hard // 2) // hard
        ds = delta - dh * hard
        cost = dh * weight + ds
        if cost <= 0 or np.random.random() < math.exp(-cost / temperature):
            period[a], room[a] = t, r
            occupant[r, t] = a
            if b >= 0:
                period[b], room[b] = ta, ra
                occupant[ra, ta] = b
            elif occupant[ra, ta] == a:
                occupant[ra, ta] = -1
            hard_now += dh
            soft_now += ds
            accepted += 1
            if hard_now < best_hard or (hard_now == best_hard and soft_now < best_soft):
                best_hard, best_soft = hard_now, soft_now
                best_period[:] = period
                best_room[:] = room
        else:
            _relocate(
                a,
                t,
                r,
                ta,
                ra,
                lecture_course,
                day_of_period,
                ppd,
                unavailable,
                excess,
                mwd,
                nb,
                nbo,
                cq,
                cqo,
                rp,
                crp,
                qp,
                cd,
                cr,
                days_used,
                rooms_used,
                hard,
            )
            if b >= 0:
                _relocate(
                    b,
                    ta,
                    ra,
                    t,
                    r,
                    lecture_course,
                    day_of_period,
                    ppd,
                    unavailable,
                    excess,
                    mwd,
                    nb,
                    nbo,
                    cq,
                    cqo,
                    rp,
                    crp,
                    qp,
                    cd,
                    cr,
                    days_used,
                    rooms_used,
                    hard,
                )
        temperature *= cooling
    return hard_now, soft_now, best_hard, best_soft, temperature, accepted


# Driving it ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """Geometric cooling from ``start`` to ``end`` over the run (iterations or seconds)."""

    start: float = 10.0
    end: float = 0.02
    chunk: int = 20_000
    #: what one hard violation costs a step, in soft penalty points
    hard_weight: float = 10_000.0

    def at(self, fraction: float) -> float:
        """The temperature after ``fraction`` of the run."""
        return self.start * (self.end / self.start) ** fraction

    def share(self, begin: float, end: float) -> Schedule:
        """The part of this schedule from fraction ``begin`` to ``end`` of the run."""
        return Schedule(start=self.at(begin), end=self.at(end), chunk=self.chunk, hard_weight=self.hard_weight)


def anneal(
    tb: Tables,
    period: np.ndarray,
    room: np.ndarray,
    *,
    seed: int,
    iterations: int | None = None,
    seconds: float | None = None,
    schedule: Schedule = Schedule(),
    trace: list[tuple[float, int, int]] | None = None,
) -> tuple[np.ndarray, np.ndarray, tuple[int, int], int]:
    """Anneal one complete timetable for ``iterations`` steps (the same result for the same seed) or
    for ``seconds`` of wall time (whichever is given); returns the best timetable seen, its
    (hard violations, soft penalties) and the steps taken.

    ``trace``, when given, receives ``(seconds since the start, hard, soft)`` after every chunk that
    improved the best.
    """
    if (iterations is None) == (seconds is None):
        raise ValueError("give iterations or seconds")
    g = graph_of(tb)
    s = new_state(tb, g, period, room)
    best_period, best_room = s.period.copy(), s.room.copy()
    occupant = np.full((tb.rooms, tb.periods), -1, dtype=np.int64)
    occupant[s.room, s.period] = np.arange(tb.lectures)
    (hard, soft), best = s.scores, s.scores
    rng = np.random.default_rng(seed)
    started = time.monotonic()
    total = iterations if iterations is not None else None
    done = 0
    temperature = schedule.start
    arrays = _arrays(tb, g, s)
    while True:
        elapsed = time.monotonic() - started
        fraction = done / total if total is not None else elapsed / seconds
        if fraction >= 1.0:
            break
        steps = schedule.chunk if total is None else min(schedule.chunk, total - done)
        # the temperature follows the fraction of the run spent, so a deadline still cools fully
        temperature = schedule.at(fraction)
        ahead = (schedule.end / schedule.start) ** (steps / total) if total is not None else 1.0
        cooling = ahead ** (1.0 / steps)
        hard, soft, *new_best, temperature, _ = _chunk(
            s.period,
            s.room,
            occupant,
            best_period,
            best_room,
            hard,
            soft,
            *best,
            schedule.hard_weight,
            steps,
            temperature,
            cooling,
            tb.rooms,
            tb.periods,
            int(rng.integers(2**31 - 1)),
            *arrays,
        )
        if tuple(new_best) < best and trace is not None:
            trace.append((round(time.monotonic() - started, 3), int(new_best[0]), int(new_best[1])))
        best = (int(new_best[0]), int(new_best[1]))
        done += steps
    return best_period, best_room, best, done

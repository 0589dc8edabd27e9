"""The genetic algorithm of one island: numpy-vectorised over the whole population.

A timetable is two (L,) integer arrays, the period and the room of every lecture; a population
stacks N of them. One generation:

1. **elitism**: the best ``elite`` timetables pass unchanged;
2. **tournament selection** of two parents per child;
3. **course crossover**: a child takes all lectures of each course from one parent or the
   other, so a course keeps its own periods and rooms (no lecture is lost or doubled);
4. **mutation**: a lecture moves to a random period and room, or two lectures swap theirs;
5. **repair** (local search): ``local_search`` times, every child moves one lecture, picked
   among the lectures in a hard violation when there are any, to the period and room that
   cost least given the rest of its timetable (hard violations first, then room capacity,
   room stability, minimum working days and compactness);
6. the children are scored by :mod:`.scoring` (numpy, or torch on a GPU).

The first population is built greedily: each individual places the lectures, hardest first
(with random tie-breaks), each in its cheapest slot. Everything random comes from one
``numpy.random.Generator``: the same seed gives the same run.
"""

from __future__ import annotations

from dataclasses import dataclass

from modelq.workloads.timetable._numpy import np
from modelq.workloads.timetable.scoring import NUMPY, Backend, population_scores
from modelq.workloads.timetable.tables import Tables

#: Weight of one hard violation against soft penalties inside the repair step's slot costs.
_HARD_COST = 1e6


@dataclass(frozen=True)
class GAParams:
    population: int = 32
    elite: int = 2
    tournament: int = 3
    crossover: float = 0.8
    mutation: float = 0.5
    local_search: int = 4


@dataclass
class Population:
    """N timetables and their scores (see :func:`~.scoring.population_scores`)."""

    period: np.ndarray
    room: np.ndarray
    scores: dict[str, np.ndarray]

    @property
    def size(self) -> int:
        return int(self.period.shape[0])

    def order(self) -> np.ndarray:
        """Indices from best to worst (stable, so ties keep their order)."""
        return np.argsort(self.scores["fitness"], kind="stable")

    def take(self, index: np.ndarray) -> Population:
        return Population(self.period[index], self.room[index], {k: v[index] for k, v in self.scores.items()})


def concat(parts: list[Population]) -> Population:
    return Population(
        np.concatenate([p.period for p in parts]),
        np.concatenate([p.room for p in parts]),
        {k: np.concatenate([p.scores[k] for p in parts]) for k in parts[0].scores},
    )


class _Counts:
    """Occupancy counts of a batch of timetables, kept in step with every move."""

    def __init__(self, tb: Tables, period: np.ndarray, room: np.ndarray) -> None:
        self.tb = tb
        self.period, self.room = period, room
        N = period.shape[0]
        C, R, T, Q = tb.courses, tb.rooms, tb.periods, tb.curricula
        placed = period >= 0
        n = np.arange(N)[:, None]
        c = tb.lecture_course[None, :]
        p, r = np.where(placed, period, 0), np.where(placed, room, 0)

        def count(index: np.ndarray, size: int) -> np.ndarray:
            return np.bincount(np.where(placed, index, size).reshape(-1), minlength=size + 1)[:size]

        self.cp = count((n * C + c) * T + p, N * C * T).reshape(N, C, T)
        self.occ = count((n * R + r) * T + p, N * R * T).reshape(N, R, T)
        self.cr = count((n * C + c) * R + r, N * C * R).reshape(N, C, R)
        if Q:
            self.qp = np.add.reduceat(self.cp[:, tb.member_courses, :], tb.member_offsets, axis=1)
        else:
            self.qp = np.zeros((N, 0, T), dtype=np.int64)
        self._conflict_f = (tb.conflict - np.eye(C, dtype=np.int64)).astype(np.float32)

    def place(self, rows: np.ndarray, lec: np.ndarray, t: np.ndarray, r: np.ndarray, sign: int) -> None:
        c = self.tb.lecture_course[lec]
        self.cp[rows, c, t] += sign
        self.occ[rows, r, t] += sign
        self.cr[rows, c, r] += sign
        if self.tb.curricula:
            self.qp[rows, :, t] += sign * self.tb.member[:, c].T
        if sign > 0:
            self.period[rows, lec], self.room[rows, lec] = t, r
        else:
            self.period[rows, lec], self.room[rows, lec] = -1, -1

    def violating(self) -> np.ndarray:
        """(N, L): lectures involved in a hard violation."""
        tb = self.tb
        N = self.period.shape[0]
        n = np.arange(N)[:, None]
        c, t, r = tb.lecture_course[None, :], self.period, self.room
        present_at = (self.cp.transpose(0, 2, 1)[n, t] > 0).astype(np.float32)  # (N, L, C)
        others = np.einsum("nlc,lc->nl", present_at, self._conflict_f[tb.lecture_course])
        return (others > 0) | (self.cp[n, c, t] > 1) | (self.occ[n, r, t] > 1) | (tb.unavailable[c, t] > 0)

    def slot_costs(self, rows: np.ndarray, lec: np.ndarray) -> np.ndarray:
        """(k, T, R): the cost of putting lecture ``lec[i]`` of timetable ``rows[i]`` in each
        period and room, the rest of the timetable as it is (the lecture must be unplaced)."""
        tb = self.tb
        k = len(rows)
        D, ppd = tb.days, tb.periods_per_day
        c = tb.lecture_course[lec]
        cp = self.cp[rows]  # (k, C, T)
        present = (cp > 0).astype(np.float32)
        others = np.einsum("kc,kct->kt", self._conflict_f[c], present)
        ar = np.arange(k)
        own = cp[ar, c]  # (k, T) other lectures of the same course
        hard = (others + (own > 0) + tb.unavailable[c])[:, :, None] + self.occ[rows].transpose(0, 2, 1)
        # soft: room capacity, room stability, minimum working days, compactness
        soft = np.broadcast_to(tb.excess[c][:, None, :], hard.shape).astype(np.float64)
        rooms_used = self.cr[rows, c]  # (k, R)
        soft = soft + ((rooms_used == 0) & (rooms_used.sum(1, keepdims=True) > 0))[:, None, :]
        days_used = own.reshape(k, D, ppd).sum(-1) > 0  # (k, D)
        new_days = days_used.sum(1, keepdims=True) + ~days_used[:, tb.day_of_period]  # (k, T)
        soft = soft + (5 * np.maximum(tb.min_working_days[c][:, None] - new_days, 0))[:, :, None]
        if tb.curricula:
            soft = soft + self._compactness(rows, c)[:, :, None]
        return hard * _HARD_COST + soft

    def _compactness(self, rows: np.ndarray, c: np.ndarray) -> np.ndarray:
        """(k, T): change of the compactness penalty when a lecture of course ``c[i]`` lands in each period."""
        tb = self.tb
        k = len(rows)
        D, ppd, Q = tb.days, tb.periods_per_day, tb.curricula
        mine = tb.member[:, c].T.astype(bool)  # (k, Q)
        busy = self.qp[rows].reshape(k, Q, D, ppd) > 0
        pad = np.zeros((k, Q, D, ppd + 4), dtype=bool)
        pad[..., 2 : ppd + 2] = busy
        left2, left, right, right2 = (
            pad[..., 0:ppd],
            pad[..., 1 : ppd + 1],
            pad[..., 3 : ppd + 3],
            pad[..., 4 : ppd + 4],
        )
        alone = ~left & ~right
        joins = (left & ~left2).astype(np.int8) + (right & ~right2)
        delta = np.where(busy, 0, alone.astype(np.int8) - joins) * mine[:, :, None, None]
        return 2 * delta.sum(1).reshape(k, D * ppd)

    def best_slots(self, rows: np.ndarray, lec: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        cost = self.slot_costs(rows, lec)
        cost += rng.random(cost.shape) * 0.5  # random tie-breaks; never reorders different integer costs
        best = cost.reshape(len(rows), -1).argmin(1)
        return best // self.tb.rooms, best % self.tb.rooms


def construct(tb: Tables, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``size`` timetables built greedily: hardest lectures first, each in its cheapest slot."""
    L = tb.lectures
    period = np.full((size, L), -1, dtype=np.int64)
    room = np.full((size, L), -1, dtype=np.int64)
    counts = _Counts(tb, period, room)
    spread = max(1.0, float(tb.difficulty.max() - tb.difficulty.min()) / 2)
    keys = -tb.difficulty[None, :] - rng.random((size, L)) * spread
    order = np.argsort(keys, axis=1, kind="stable")
    rows = np.arange(size)
    for step in range(L):
        lec = order[:, step]
        t, r = counts.best_slots(rows, lec, rng)
        counts.place(rows, lec, t, r, +1)
    return period, room


def repair(tb: Tables, period: np.ndarray, room: np.ndarray, steps: int, rng: np.random.Generator) -> None:
    """``steps`` times, move one lecture of each timetable (in place) to its cheapest slot,
    picking among the lectures in a hard violation when there are any."""
    if steps <= 0:
        return
    counts = _Counts(tb, period, room)
    rows = np.arange(period.shape[0])
    for _ in range(steps):
        keys = rng.random(period.shape) + counts.violating()
        lec = keys.argmax(1)
        counts.place(rows, lec, period[rows, lec], room[rows, lec], -1)
        t, r = counts.best_slots(rows, lec, rng)
        counts.place(rows, lec, t, r, +1)


def initial_population(tb: Tables, params: GAParams, rng: np.random.Generator, backend: Backend = NUMPY) -> Population:
    period, room = construct(tb, params.population, rng)
    repair(tb, period, room, params.local_search, rng)
    return Population(period, room, population_scores(tb, period, room, backend=backend))


def generation(
    tb: Tables, pop: Population, params: GAParams, rng: np.random.Generator, backend: Backend = NUMPY
) -> Population:
    """One generation (see the module docstring); returns the next population."""
    N = pop.size
    elite = min(params.elite, N)
    k = N - elite
    fitness = pop.scores["fitness"]
    order = pop.order()
    if k == 0:
        return pop.take(order)
    entrants = rng.integers(0, N, size=(k, 2, params.tournament))
    winners = np.take_along_axis(entrants, fitness[entrants].argmin(-1)[..., None], -1)[..., 0]
    a, b = winners[:, 0], winners[:, 1]
    # course crossover
    cross = rng.random(k) < params.crossover
    from_a = (rng.random((k, tb.courses)) < 0.5) | ~cross[:, None]
    pick = from_a[:, tb.lecture_course]
    period = np.where(pick, pop.period[a], pop.period[b])
    room = np.where(pick, pop.room[a], pop.room[b])
    # mutation: a random move, or a swap of two lectures
    rows = np.nonzero(rng.random(k) < params.mutation)[0]
    if len(rows):
        lec = rng.integers(0, tb.lectures, size=len(rows))
        swap = rng.random(len(rows)) < 0.5
        other = rng.integers(0, tb.lectures, size=len(rows))
        new_t = np.where(swap, period[rows, other], rng.integers(0, tb.periods, size=len(rows)))
        new_r = np.where(swap, room[rows, other], rng.integers(0, tb.rooms, size=len(rows)))
        s_rows, s_other = rows[swap], other[swap]
        period[s_rows, s_other], room[s_rows, s_other] = period[s_rows, lec[swap]], room[s_rows, lec[swap]]
        period[rows, lec], room[rows, lec] = new_t, new_r
    repair(tb, period, room, params.local_search, rng)
    children = Population(period, room, population_scores(tb, period, room, backend=backend))
    return concat([pop.take(order[:elite]), children])

"""The evaluator: hard and soft constraints of ITC-2007 track 3, for a whole population at once.

Hard constraints (each violation counts 1; a timetable is feasible when they sum to 0):

* ``lectures``: a lecture not scheduled, or two lectures of one course in the same period
  (each lecture beyond the first in a period counts);
* ``room_occupancy``: each lecture beyond the first in one room and period;
* ``conflicts``: each pair of courses that share a curriculum or a teacher and both have a
  lecture in the same period, counted once per period (the ITC-2007 validator's rule);
* ``availability``: each lecture in a period its course is unavailable.

Soft constraints, with the ITC-2007 weights (``soft_penalties`` reports them weighted, so they
add up to ``soft``):

* ``room_capacity`` (1): each student over the room's capacity, per lecture;
* ``min_working_days`` (5): each day a course falls short of its minimum working days;
* ``curriculum_compactness`` (2): each lecture of a curriculum with no lecture of the same
  curriculum in the period just before or just after it on the same day;
* ``room_stability`` (1): each room a course uses beyond its first.

The same code runs on numpy arrays and, for the "GPU island" mode, on torch tensors (any
device): scores are integers computed the same way, so both give identical results.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from modelq.errors import InvalidInput, MissingDependency
from modelq.workloads.timetable._numpy import np
from modelq.workloads.timetable.problem import Instance
from modelq.workloads.timetable.tables import Tables, tables_of

HARD = ("lectures", "room_occupancy", "conflicts", "availability")
SOFT_WEIGHTS = {"room_capacity": 1, "min_working_days": 5, "curriculum_compactness": 2, "room_stability": 1}
#: fitness = hard * HARD_SCALE + soft: any hard violation outweighs every soft penalty.
HARD_SCALE = 1 << 32


def population_scores(
    tables: Tables, period: Any, room: Any, *, backend: Backend | None = None
) -> dict[str, np.ndarray]:
    """Score every timetable of a population.

    Args:
        tables: the instance's arrays.
        period: (N, L) period of each lecture (``-1``: not scheduled).
        room: (N, L) room of each lecture.
        backend: where to compute (default numpy); see :func:`fitness_backend`.

    Returns:
        (N,) int64 arrays: one per constraint in :data:`HARD` and :data:`SOFT_WEIGHTS` (soft ones
        weighted), plus ``hard``, ``soft`` and ``fitness`` (lower is better).
    """
    backend = backend or NUMPY
    xp = backend
    period, room = xp.asarray(period), xp.asarray(room)
    tb = xp.tables(tables)
    N = period.shape[0]
    C, R, T = tables.courses, tables.rooms, tables.periods
    D, ppd = tables.days, tables.periods_per_day
    scheduled = (period >= 0) & (room >= 0)
    n = xp.arange(N)[:, None]
    c = tb["lecture_course"][None, :]
    p = xp.where(scheduled, period, 0)
    r = xp.where(scheduled, room, 0)
    cp = xp.count(xp.where(scheduled, (n * C + c) * T + p, N * C * T), N * C * T).reshape(N, C, T)
    occ = xp.count(xp.where(scheduled, (n * R + r) * T + p, N * R * T), N * R * T).reshape(N, R, T)
    cr = xp.count(xp.where(scheduled, (n * C + c) * R + r, N * C * R), N * C * R).reshape(N, C, R)
    present = cp > 0

    out: dict[str, Any] = {}
    out["lectures"] = (~scheduled).sum(1) + (cp - 1).clip(min=0).sum((1, 2))
    out["room_occupancy"] = (occ - 1).clip(min=0).sum((1, 2))
    out["conflicts"] = (present[:, tb["pair_i"], :] & present[:, tb["pair_j"], :]).sum((1, 2))
    out["availability"] = (cp * tb["unavailable"][None]).sum((1, 2))
    out["room_capacity"] = (cr * tb["excess"][None]).sum((1, 2))
    days = present.reshape(N, C, D, ppd).any(-1).sum(-1)
    out["min_working_days"] = (tb["min_working_days"][None] - days).clip(min=0).sum(1) * SOFT_WEIGHTS[
        "min_working_days"
    ]
    out["room_stability"] = ((cr > 0).sum(-1) - 1).clip(min=0).sum(1)
    if tables.curricula:
        busy = xp.segment_any(present, tb, tables.curricula).reshape(N, tables.curricula, D, ppd)
        if ppd == 1:
            isolated = busy.sum((1, 2, 3))
        else:
            isolated = (
                (busy[..., 0] & ~busy[..., 1]).sum((1, 2))
                + (busy[..., -1] & ~busy[..., -2]).sum((1, 2))
                + (busy[..., 1:-1] & ~busy[..., :-2] & ~busy[..., 2:]).sum((1, 2, 3))
            )
        out["curriculum_compactness"] = isolated * SOFT_WEIGHTS["curriculum_compactness"]
    else:
        out["curriculum_compactness"] = xp.zeros(N)
    scores = {key: xp.numpy(value).astype(np.int64) for key, value in out.items()}
    scores["hard"] = sum(scores[key] for key in HARD)
    scores["soft"] = sum(scores[key] for key in SOFT_WEIGHTS)
    scores["fitness"] = scores["hard"] * HARD_SCALE + scores["soft"]
    return scores


def score_dict(scores: dict[str, np.ndarray], i: int) -> dict[str, Any]:
    """Individual ``i`` of :func:`population_scores` as a plain report."""
    hard = int(scores["hard"][i])
    return {
        "hard": hard,
        "soft": int(scores["soft"][i]),
        "feasible": hard == 0,
        "hard_violations": {key: int(scores[key][i]) for key in HARD},
        "soft_penalties": {key: int(scores[key][i]) for key in SOFT_WEIGHTS},
    }


def evaluate(instance: Instance, assignments: Iterable[dict[str, Any]], field: str = "assignments") -> dict[str, Any]:
    """Score one timetable given as assignments (``course``, ``day``, ``period``, ``room``;
    ``lecture`` optional). Lectures with no assignment count as not scheduled.

    Returns:
        ``hard``, ``soft``, ``feasible``, ``hard_violations`` and ``soft_penalties`` (weighted).

    Raises:
        InvalidInput: an unknown course or room, a day or period out of range, or more
            assignments for a course than it has lectures.
    """
    period, room = assignment_arrays(instance, assignments, field)
    return score_dict(population_scores(tables_of(instance), period[None], room[None]), 0)


def assignment_arrays(
    instance: Instance, assignments: Iterable[dict[str, Any]], field: str = "assignments"
) -> tuple[np.ndarray, np.ndarray]:
    """(L,) period and room arrays of assignments (``-1`` where a lecture has none)."""
    period = np.full(instance.lectures, -1, dtype=np.int64)
    room = np.full(instance.lectures, -1, dtype=np.int64)
    used: dict[int, int] = {}
    for i, a in enumerate(assignments):
        where = f"{field}[{i}]"
        if not isinstance(a, dict):
            raise InvalidInput(f"must be an object, got {type(a).__name__}", field=where)
        for key in ("course", "day", "period", "room"):
            if key not in a:
                raise InvalidInput(f"missing required key {key!r}", field=f"{where}.{key}")
        c = instance.course_index.get(a["course"])
        if c is None:
            raise InvalidInput(f"unknown course {a['course']!r}", field=f"{where}.course")
        r = instance.room_index.get(a["room"])
        if r is None:
            raise InvalidInput(f"unknown room {a['room']!r}", field=f"{where}.room")
        day, slot = a["day"], a["period"]
        if not isinstance(day, int) or not 0 <= day < instance.days:
            raise InvalidInput(f"must be an integer in 0..{instance.days - 1}, got {day!r}", field=f"{where}.day")
        if not isinstance(slot, int) or not 0 <= slot < instance.periods_per_day:
            raise InvalidInput(
                f"must be an integer in 0..{instance.periods_per_day - 1}, got {slot!r}", field=f"{where}.period"
            )
        lectures = instance.courses[c].lectures
        k = a.get("lecture", used.get(c, 0))
        if not isinstance(k, int) or not 0 <= k < lectures or period[instance.lecture_offsets[c] + k] >= 0:
            raise InvalidInput(
                f"course {a['course']!r} has {lectures} lecture(s); lecture {k!r} is out of range or assigned twice",
                field=f"{where}.lecture",
            )
        used[c] = max(used.get(c, 0), k + 1)
        period[instance.lecture_offsets[c] + k] = day * instance.periods_per_day + slot
        room[instance.lecture_offsets[c] + k] = r
    return period, room


# Backends ---------------------------------------------------------------------------------


class Backend:
    """The handful of array operations the evaluator needs, on numpy."""

    name = "numpy"

    def asarray(self, x: Any) -> Any:
        return np.asarray(x, dtype=np.int64)

    def tables(self, tables: Tables) -> dict[str, Any]:
        return {key: getattr(tables, key) for key in _TABLE_ARRAYS}

    def arange(self, n: int) -> Any:
        return np.arange(n, dtype=np.int64)

    def zeros(self, n: int) -> Any:
        return np.zeros(n, dtype=np.int64)

    def where(self, cond: Any, a: Any, b: Any) -> Any:
        return np.where(cond, a, b)

    def count(self, index: Any, size: int) -> Any:
        """Occurrences of 0..size-1 in ``index``; entries equal to ``size`` are dropped."""
        return np.bincount(index.reshape(-1), minlength=size + 1)[:size]

    def segment_any(self, present: Any, tb: dict[str, Any], segments: int) -> Any:
        """(N, Q, T): whether any course of each curriculum has a lecture in each period."""
        return np.logical_or.reduceat(present[:, tb["member_courses"], :], tb["member_offsets"], axis=1)

    def numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x)


_TABLE_ARRAYS = (
    "lecture_course",
    "pair_i",
    "pair_j",
    "unavailable",
    "excess",
    "min_working_days",
    "member_courses",
    "member_offsets",
    "member_curriculum",
)


class TorchBackend(Backend):
    """The same operations on torch tensors on ``device`` (the seed's "GPU island" mode)."""

    name = "torch"

    def __init__(self, device: str | None = None) -> None:
        try:
            import torch
        except ImportError as exc:
            raise MissingDependency("torch", "embed") from exc
        self.torch = torch
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self._tables: dict[int, dict[str, Any]] = {}

    def asarray(self, x: Any) -> Any:
        return self.torch.as_tensor(np.asarray(x, dtype=np.int64), device=self.device)

    def tables(self, tables: Tables) -> dict[str, Any]:
        key = id(tables)
        if key not in self._tables:
            self._tables = {key: {name: self.asarray(getattr(tables, name)) for name in _TABLE_ARRAYS}}
        return self._tables[key]

    def arange(self, n: int) -> Any:
        return self.torch.arange(n, dtype=self.torch.int64, device=self.device)

    def zeros(self, n: int) -> Any:
        return self.torch.zeros(n, dtype=self.torch.int64, device=self.device)

    def where(self, cond: Any, a: Any, b: Any) -> Any:
        torch = self.torch
        a = a if torch.is_tensor(a) else torch.tensor(a, dtype=torch.int64, device=self.device)
        b = b if torch.is_tensor(b) else torch.tensor(b, dtype=torch.int64, device=self.device)
        return torch.where(cond, a, b)

    def count(self, index: Any, size: int) -> Any:
        return self.torch.bincount(index.reshape(-1), minlength=size + 1)[:size]

    def segment_any(self, present: Any, tb: dict[str, Any], segments: int) -> Any:
        torch = self.torch
        picked = present[:, tb["member_courses"], :].to(torch.int32)
        total = torch.zeros((present.shape[0], segments, present.shape[2]), dtype=torch.int32, device=self.device)
        return total.index_add_(1, tb["member_curriculum"], picked) > 0

    def numpy(self, x: Any) -> np.ndarray:
        return x.detach().cpu().numpy()


NUMPY = Backend()


def fitness_backend(kind: str = "numpy", device: str | None = None) -> Backend:
    """``numpy`` (default), ``torch`` (on ``device``: default CUDA when present, else CPU), or
    ``auto`` (torch on a GPU when torch and a GPU are there, else numpy).

    Raises:
        MissingDependency: ``torch`` asked for and not installed.
        InvalidInput: an unknown kind.
    """
    if kind == "numpy":
        return NUMPY
    if kind == "torch":
        return TorchBackend(device)
    if kind == "auto":
        try:
            import torch
        except ImportError:
            return NUMPY
        return TorchBackend(device) if torch.cuda.is_available() else NUMPY
    raise InvalidInput(f"fitness must be 'numpy', 'torch' or 'auto', got {kind!r}", field="fitness")

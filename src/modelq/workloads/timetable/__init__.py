"""``timetable``: university course timetabling by a memetic island model (a genetic algorithm
around simulated annealing).

The problem is ITC-2007's curriculum-based course timetabling (read and written as ``.ctt``
text or JSON). K islands evolve apart on the ``cpu`` queue, one chord per epoch, and exchange
their best timetables between epochs; without a worker they run in local processes and give
the same result for the same seed. The result holds the N best distinct timetables with their
hard and soft scores.

Modules, one concept each: :mod:`.problem` (the instance and its JSON form), :mod:`.ctt` (the
ITC-2007 text format), :mod:`.inputs` (a job's input and quality modes), :mod:`.tables`
(numpy arrays of an instance), :mod:`.scoring` (hard and soft constraints, numpy or torch),
:mod:`.ga` (one island's genetic algorithm), :mod:`.anneal` (simulated annealing with
incremental costs: each island's memetic local search), :mod:`.islands` (epochs, migration, local
processes), :mod:`.flow` (the epochs on Celery), :mod:`.tasks` (the registered tasks),
:mod:`.generate` (instances with a planted solution, samples).

Importing this package registers the tasks; numpy is imported only when a job runs.
"""

from __future__ import annotations

from typing import Any

from modelq.workloads.timetable import tasks  # noqa: F401 - registers the tasks
from modelq.workloads.timetable.ctt import format_ctt, format_solution, parse_ctt, parse_solution
from modelq.workloads.timetable.inputs import QUALITY_MODES, RunConfig, load_instance, resolve_config
from modelq.workloads.timetable.problem import Instance, instance_from_dict, instance_to_dict

__all__ = [
    "QUALITY_MODES",
    "Instance",
    "RunConfig",
    "evaluate",
    "format_ctt",
    "format_solution",
    "instance_from_dict",
    "instance_to_dict",
    "load_instance",
    "parse_ctt",
    "parse_solution",
    "resolve_config",
    "solve",
]


def evaluate(instance: Instance, assignments: list[dict[str, Any]]) -> dict[str, Any]:
    """Hard and soft scores of one timetable (see :func:`.scoring.evaluate`)."""
    from modelq.workloads.timetable.scoring import evaluate as run

    return run(instance, assignments)


def solve(
    instance: Instance, quality_mode: str = "balanced", *, processes: int | None = None, **settings: Any
) -> dict[str, Any]:
    """Run the island model on this machine (local processes) and return the job's result.

    Args:
        quality_mode: ``fast``, ``balanced`` or ``best``; ``settings`` override its values
            (``seed``, ``islands``, ``epochs``, ``generations``, ``population``, ``migrants``,
            ``local_search``, ``topology``, ``variants``, ``fitness``).
        processes: see :func:`.islands.solve_locally`.
    """
    from modelq.workloads.timetable.islands import solve_locally

    return solve_locally(instance, resolve_config(quality_mode, field="", **settings), processes=processes)

"""The island model: K populations evolve apart for an epoch, then the best move between them.

Everything here is a pure function of its arguments, so an epoch of island ``i`` gives the
same population whether it ran on a Celery worker (:mod:`.flow`), in a local process or in
this thread: its random numbers come from ``(seed, island, epoch)`` alone, and migration
happens between epochs in island order.

An island's state between epochs is JSON: its population packed as 16-bit slots
(``period * rooms + room``), zlib-compressed and base64-encoded, with each individual's hard
and soft score.
"""

from __future__ import annotations

import base64
import multiprocessing
import os
import zlib
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from modelq.workloads.timetable._numpy import np
from modelq.workloads.timetable.ga import Population, generation, initial_population
from modelq.workloads.timetable.inputs import RunConfig
from modelq.workloads.timetable.problem import Instance
from modelq.workloads.timetable.scoring import fitness_backend, population_scores, score_dict
from modelq.workloads.timetable.tables import Tables, tables_of

# One island's epoch -----------------------------------------------------------------------


def run_island_epoch(
    instance: Instance, config: RunConfig, island: int, epoch: int, state: dict | None
) -> dict[str, Any]:
    """Evolve island ``island`` for one epoch (``config.generations`` generations).

    Args:
        state: the island's packed population after migration, or None in the first epoch
            (the population is then built greedily).

    Returns:
        The packed population, its scores, and how many timetables were evaluated.
    """
    tb = tables_of(instance)
    backend = fitness_backend(config.fitness)
    params = config.ga_params()
    rng = np.random.default_rng([config.seed, island, epoch])
    evaluations = 0
    if state is None:
        pop = initial_population(tb, params, rng, backend)
        evaluations += pop.size
    else:
        period, room = unpack(state, tb)
        pop = Population(period, room, population_scores(tb, period, room, backend=backend))
    for _ in range(config.generations):
        pop = generation(tb, pop, params, rng, backend)
        evaluations += pop.size - params.elite
    pop, steps = anneal_best(tb, pop, config, island, epoch, backend)
    return {"island": island, "epoch": epoch, "evaluations": evaluations + steps, **pack(pop, tb)}


def anneal_best(
    tb: Tables, pop: Population, config: RunConfig, island: int, epoch: int, backend: Any
) -> tuple[Population, int]:
    """Anneal the island's best complete timetable (the memetic step) and put the result in its place.

    The temperature follows the whole run: epoch ``e`` of ``E`` cools from where epoch ``e - 1``
    stopped, so the islands anneal once over the run, with migration between the epochs. With a
    time limit it anneals until the epoch's deadline; else ``config.anneal`` steps.
    """
    from modelq.workloads.timetable.anneal import Schedule, anneal

    if config.anneal == 0 and config.time_limit is None:
        return pop, 0
    order = pop.order()
    best = next((int(i) for i in order if (pop.period[i] >= 0).all() and (pop.room[i] >= 0).all()), None)
    if best is None:
        return pop, 0
    schedule = Schedule().share(epoch / config.epochs, (epoch + 1) / config.epochs)
    seed = int(np.random.default_rng([config.seed, island, epoch, 1]).integers(2**31 - 1))
    deadline = config.epoch_deadline(epoch)
    if deadline is not None:
        import time

        seconds = deadline - time.time()
        if seconds <= 0.05:  # this island started after its epoch's deadline (fewer slots than islands)
            return pop, 0
        period, room, _scores, steps = anneal(
            tb, pop.period[best], pop.room[best], seed=seed, seconds=seconds, schedule=schedule
        )
    else:
        period, room, _scores, steps = anneal(
            tb, pop.period[best], pop.room[best], seed=seed, iterations=config.anneal, schedule=schedule
        )
    pop.period[best], pop.room[best] = period, room
    return Population(pop.period, pop.room, population_scores(tb, pop.period, pop.room, backend=backend)), steps


def pack(pop: Population, tb: Tables) -> dict[str, Any]:
    slots = (pop.period * tb.rooms + pop.room).astype("<u2")
    return {
        "shape": [int(n) for n in slots.shape],
        "slots": base64.b64encode(zlib.compress(slots.tobytes(), 6)).decode("ascii"),
        "hard": [int(v) for v in pop.scores["hard"]],
        "soft": [int(v) for v in pop.scores["soft"]],
    }


def unpack(state: dict[str, Any], tb: Tables) -> tuple[np.ndarray, np.ndarray]:
    raw = zlib.decompress(base64.b64decode(state["slots"]))
    slots = np.frombuffer(raw, dtype="<u2").reshape(state["shape"]).astype(np.int64)
    return slots // tb.rooms, slots % tb.rooms


def _fitness(state: dict[str, Any]) -> np.ndarray:
    return np.asarray(state["hard"], dtype=np.int64) * (1 << 32) + np.asarray(state["soft"], dtype=np.int64)


# Between epochs -------------------------------------------------------------------------------


def migrate(states: list[dict[str, Any]], config: RunConfig) -> list[dict[str, Any]]:
    """Send each island's best ``migrants`` timetables to its neighbours, replacing their worst.

    ``ring``: island i receives from island i-1; ``full``: every island receives the best
    ``migrants`` among all the others' emigrants; ``none``: no migration.
    """
    K, m = len(states), config.migrants
    if K < 2 or m == 0 or config.topology == "none":
        return states
    decoded = []
    for state in states:
        raw = zlib.decompress(base64.b64decode(state["slots"]))
        decoded.append(np.frombuffer(raw, dtype="<u2").reshape(state["shape"]).copy())
    orders = [np.argsort(_fitness(s), kind="stable") for s in states]
    emigrants = [
        (
            decoded[i][orders[i][:m]],
            [states[i]["hard"][j] for j in orders[i][:m]],
            [states[i]["soft"][j] for j in orders[i][:m]],
        )
        for i in range(K)
    ]
    out = []
    for i, state in enumerate(states):
        if config.topology == "ring":
            slots, hard, soft = emigrants[(i - 1) % K]
        else:  # full: the best m of every other island's emigrants
            pool = [
                (emigrants[j][1][x] * (1 << 32) + emigrants[j][2][x], j, x)
                for j in range(K)
                if j != i
                for x in range(m)
            ]
            best = sorted(pool)[:m]
            slots = np.stack([emigrants[j][0][x] for _f, j, x in best])
            hard = [emigrants[j][1][x] for _f, j, x in best]
            soft = [emigrants[j][2][x] for _f, j, x in best]
        worst = orders[i][len(orders[i]) - len(hard) :]
        population = decoded[i].copy()
        new_hard, new_soft = list(state["hard"]), list(state["soft"])
        for w, s, h, so in zip(worst, slots, hard, soft, strict=True):
            population[w], new_hard[w], new_soft[w] = s, h, so
        out.append(
            {
                **state,
                "slots": base64.b64encode(zlib.compress(population.tobytes(), 6)).decode("ascii"),
                "hard": new_hard,
                "soft": new_soft,
            }
        )
    return out


def new_run() -> dict[str, Any]:
    """What the orchestration carries from epoch to epoch."""
    return {"evaluations": 0, "history": []}


def advance(
    config: RunConfig, epoch: int, results: list[dict[str, Any]], run: dict[str, Any]
) -> tuple[list[dict], dict]:
    """After an epoch: record the best so far, then migrate (unless it was the last epoch).

    Returns:
        (the islands' states for the next epoch, or the final ones; the updated run record)
    """
    states = sorted(results, key=lambda s: s["island"])
    best = min(min(zip(s["hard"], s["soft"], strict=True)) for s in states)
    history = list(run["history"])
    if history:
        best = min(best, (history[-1]["hard"], history[-1]["soft"]))
    evaluations = run["evaluations"] + sum(s["evaluations"] for s in states)
    history.append({"epoch": epoch + 1, "hard": int(best[0]), "soft": int(best[1]), "evaluations": evaluations})
    run = {**run, "evaluations": evaluations, "history": history}
    if epoch + 1 < config.epochs:
        states = migrate(states, config)
    return states, run


def progress_message(config: RunConfig, run: dict[str, Any]) -> str:
    last = run["history"][-1]
    return f"epoch {last['epoch']}/{config.epochs}: best hard {last['hard']}, soft {last['soft']}"


def finish(
    instance: Instance,
    config: RunConfig,
    states: list[dict[str, Any]],
    run: dict[str, Any],
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The job's result: the N best distinct timetables over all islands, with their scores."""
    tb = tables_of(instance)
    candidates = []
    for state in states:
        period, room = unpack(state, tb)
        fitness = _fitness(state)
        for j in range(period.shape[0]):
            candidates.append((int(fitness[j]), state["island"], j, period[j], room[j]))
    candidates.sort(key=lambda c: c[:3])
    variants, seen = [], set()
    for _fitness_value, island, _j, period, room in candidates:
        key = canonical(tb, period, room)
        if key in seen:
            continue
        seen.add(key)
        scores = score_dict(population_scores(tb, period[None], room[None]), 0)
        variants.append(
            {"rank": len(variants) + 1, "island": island, **scores, "assignments": assignments(instance, period, room)}
        )
        if len(variants) == config.variants:
            break
    best = run["history"][-1]
    return {
        "instance": instance.summary(),
        "meta": meta or {},
        "settings": config.to_dict(),
        "evaluations": run["evaluations"],
        "best": {"hard": best["hard"], "soft": best["soft"], "feasible": best["hard"] == 0},
        "history": run["history"],
        "variants": variants,
    }


def canonical(tb: Tables, period: np.ndarray, room: np.ndarray) -> bytes:
    """The timetable with each course's lectures in slot order: two variants that only
    number a course's lectures differently are the same timetable."""
    slots = period * tb.rooms + room
    return slots[np.lexsort((slots, tb.lecture_course))].astype("<u2").tobytes()


def assignments(instance: Instance, period: np.ndarray, room: np.ndarray) -> list[dict[str, Any]]:
    """(course, lecture, day, period, room) rows, courses in instance order."""
    out = []
    ppd = instance.periods_per_day
    for lec, c in enumerate(instance.course_of_lecture):
        t, r = int(period[lec]), int(room[lec])
        out.append(
            {
                "course": instance.courses[c].id,
                "lecture": lec - instance.lecture_offsets[c],
                "day": t // ppd,
                "period": t % ppd,
                "room": instance.rooms[r].id,
            }
        )
    return out


# Local processes ----------------------------------------------------------------------------


def solve_locally(
    instance: Instance,
    config: RunConfig,
    *,
    processes: int | None = None,
    meta: dict[str, Any] | None = None,
    on_epoch: Callable[[RunConfig, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run the island model on this machine: each epoch's islands in parallel processes.

    Args:
        processes: how many processes (default: one per island, at most one per CPU);
            0 or 1 runs the islands one after the other in this process. Inside a daemonic
            process (which may not have children) the islands always run in this process.
            The processes are spawned: a script calling this belongs under
            ``if __name__ == "__main__":``, as with any ``multiprocessing`` code.
        on_epoch: called after each epoch with the config and the run record (``history``
            holds the best hard and soft score so far); raise from it to stop.

    Returns:
        The same result a Celery run with the same seed returns.
    """
    if processes is None:
        processes = min(config.islands, os.cpu_count() or 1) if not config.islands_per_slot else (os.cpu_count() or 1)
    config = config.started(max(processes, 1))
    if multiprocessing.current_process().daemon:
        processes = 0
    pool = ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) if processes > 1 else None
    try:
        states: list[Any] = [None] * config.islands
        run = new_run()
        for epoch in range(config.epochs):
            if pool is not None:
                futures = [
                    pool.submit(run_island_epoch, instance, config, i, epoch, states[i]) for i in range(config.islands)
                ]
                results = [f.result() for f in futures]
            else:
                results = [run_island_epoch(instance, config, i, epoch, states[i]) for i in range(config.islands)]
            states, run = advance(config, epoch, results, run)
            if on_epoch is not None:
                on_epoch(config, run)
        return finish(instance, config, states, run, meta)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

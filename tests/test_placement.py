"""The placement policy alone (modelq.models.placement.plan): a pure function of a snapshot."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone

import pytest

from modelq.models.placement import Demand, Peer, plan

pytestmark = pytest.mark.fast

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=timezone.utc)
A, B, C = "default.model.a", "default.model.b", "default.model.c"
KNOWN = {A, B, C}


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def demand(queued: int, waited: float = 0.0, job: float = 0.1, load: float = 2.0) -> Demand:
    return Demand(queued=queued, oldest=ago(waited), job_seconds=job, load_seconds=load)


def plans(peers: list[Peer], backlog: dict[str, Demand], **kw: float) -> dict[str, set[str]]:
    """Every worker's own plan from one snapshot: what each will read."""
    by_name = {p.name: p for p in peers}
    options = {"switch_factor": 4.0, "max_wait": 5.0, **kw}
    return {p.name: plan(p.name, by_name, backlog, known=KNOWN, now=NOW, **options).reading for p in peers}


def servers(reading: dict[str, set[str]]) -> dict[str, int]:
    return {q: sum(q in r for r in reading.values()) for q in KNOWN}


def test_with_nothing_queued_a_worker_reads_the_queues_of_the_models_it_holds() -> None:
    assert plans([Peer("w0", holds={A}, slots=1), Peer("w1", slots=1)], {}) == {"w0": {A}, "w1": set()}


def test_with_room_for_every_waiting_model_a_worker_reads_them_all() -> None:
    assert plans([Peer("w0", slots=2)], {A: demand(3), B: demand(3)}) == {"w0": {A, B}}
    assert plans([Peer("w0", slots=None)], {A: demand(3), B: demand(3), C: demand(1)}) == {"w0": {A, B, C}}


def test_a_worker_stays_with_its_model_while_the_other_is_not_overdue() -> None:
    busy = Peer("w0", chosen={A: ago(60)}, holds={A}, slots=1)
    assert plans([busy], {A: demand(30), B: demand(50, waited=1)}) == {"w0": {A}}


def test_when_every_job_is_overdue_a_sole_server_switches_only_after_k_loads_of_service() -> None:
    backlog = {A: demand(100, waited=100), B: demand(100, waited=100), C: demand(100, waited=100)}
    # served A for 5 s, less than k x load = 4 x 2 s: it stays, although B and C are overdue
    assert plans([Peer("w0", chosen={A: ago(5)}, holds={A}, slots=1)], backlog) == {"w0": {A}}
    # served A for 9 s: it pays for the switch, and goes to the model whose job waited longest
    backlog[C] = demand(100, waited=200)
    assert plans([Peer("w0", chosen={A: ago(9)}, holds={A}, slots=1)], backlog) == {"w0": {C}}
    # the measured load time decides: with 10 s loads, 9 s of service is not enough
    slow = {q: demand(100, waited=200, load=10.0) for q in KNOWN}
    assert plans([Peer("w0", chosen={A: ago(9)}, holds={A}, slots=1)], slow) == {"w0": {A}}


def test_an_overdue_model_takes_the_worker_of_the_quietest_model_not_the_hot_ones_only_worker() -> None:
    # two workers, three models under steady arrivals: A is hot (500 jobs in the last minute), C quiet
    # (50); B is overdue. w0 has served A long enough to pay for a switch, w1 has served C only 5 s.
    def arriving(arrived: int, queued: int = 3, waited: float = 0.5) -> Demand:
        return dataclasses.replace(demand(queued, waited=waited), last_arrival=ago(0.2), arrived=arrived)

    backlog = {A: arriving(500), B: arriving(200, queued=40, waited=20), C: arriving(50)}
    hot, quiet = Peer("w0", chosen={A: ago(30)}, holds={A}, slots=1), Peer("w1", chosen={C: ago(5)}, holds={C}, slots=1)
    # A keeps its only worker: C's will be free to move within k loads (w1 must not take B while w0 does)
    assert plans([hot, quiet], backlog) == {"w0": {A}, "w1": {C}}
    # once w1 has served C for k loads, it is the one that moves
    quiet.chosen = {C: ago(9)}
    assert plans([hot, quiet], backlog) == {"w0": {A}, "w1": {B}}
    # alone, the hot model's worker still moves: the starvation bound holds on one worker
    assert plans([hot], backlog) == {"w0": {B}}


def test_overdue_models_go_in_the_order_they_began_waiting_not_by_submission() -> None:
    # a burst submitted every job 60 s ago; A was served until a second ago, B has waited 40 s: the
    # worker leaving C (it served C long enough) goes to B, though A's oldest job is as old
    burst = {
        A: dataclasses.replace(demand(100, waited=60), served_at=ago(1)),
        B: dataclasses.replace(demand(100, waited=59), served_at=ago(40)),
        C: demand(100, waited=60),
    }
    assert plans([Peer("w0", chosen={C: ago(20)}, holds={C}, slots=1)], burst) == {"w0": {B}}
    # and a model served a moment ago is not overdue at all
    fresh = {A: dataclasses.replace(demand(100, waited=60), served_at=ago(1)), C: demand(100, waited=60)}
    assert plans([Peer("w0", chosen={C: ago(20)}, holds={C}, slots=1)], fresh) == {"w0": {C}}


def test_a_worker_whose_model_ran_dry_takes_the_oldest_waiting_model() -> None:
    backlog = {B: demand(5, waited=2), C: demand(5, waited=3)}
    assert plans([Peer("w0", chosen={A: ago(30)}, holds={A}, slots=1)], backlog) == {"w0": {C}}


def test_two_idle_workers_do_not_both_take_a_cold_model_for_one_job() -> None:
    reading = plans([Peer("w0", slots=1), Peer("w1", slots=1)], {C: demand(1)})
    assert servers(reading)[C] == 1
    # with a backlog whose expected wait exceeds a load, the second one joins
    reading = plans([Peer("w0", slots=1), Peer("w1", slots=1)], {C: demand(100)})
    assert servers(reading)[C] == 2


def test_four_idle_workers_spread_a_skewed_burst_by_demand() -> None:
    peers = [Peer(f"w{i}", slots=1) for i in range(4)]
    reading = plans(peers, {A: demand(120), B: demand(60), C: demand(20)})
    assert servers(reading) == {A: 2, B: 1, C: 1}
    assert all(len(r) == 1 for r in reading.values())


def test_a_capped_model_gets_no_more_workers_than_its_cap() -> None:
    peers = [Peer(f"w{i}", slots=1) for i in range(4)]
    # A has the most work, but max_concurrency 1: a second worker would load it and wait its turn
    capped = dataclasses.replace(demand(120), cap=1)
    reading = plans(peers, {A: capped, B: demand(60), C: demand(20)})
    assert servers(reading) == {A: 1, B: 2, C: 1}
    # nor does a rebalance move a server of B there
    peers = [
        Peer("w0", chosen={A: ago(60)}, holds={A}, slots=1),
        *(Peer(f"w{i}", chosen={B: ago(60)}, holds={B}, slots=1) for i in (1, 2, 3)),
    ]
    assert servers(plans(peers, {A: dataclasses.replace(demand(400), cap=1), B: demand(8)}))[A] == 1
    assert servers(plans(peers, {A: demand(400), B: demand(8)}))[A] == 2  # uncapped, one moves


def test_an_idle_worker_that_holds_the_model_takes_it_before_one_that_would_load_it() -> None:
    reading = plans([Peer("w0", slots=1), Peer("w1", holds={B}, slots=1)], {B: demand(1)})
    assert reading == {"w0": set(), "w1": {B}}


def test_when_demand_shifts_servers_of_the_cold_model_move_to_the_hot_one_a_few_per_tick() -> None:
    peers = [Peer(f"w{i}", chosen={A: ago(60)}, holds={A}, slots=1) for i in range(4)]
    backlog = {A: demand(8), B: demand(400, waited=6)}
    # B is overdue and nobody serves it: one of A's four servers moves (rule 5), and one more
    # rebalances (rule 6): B's work per server, after the move, exceeds a load plus A's
    reading = plans(peers, backlog)
    assert servers(reading) == {A: 2, B: 2, C: 0}
    # the next tick, with those moves published, one more follows; A keeps one server
    peers = [Peer(p.name, chosen={B: NOW} if B in reading[p.name] else p.chosen, holds={A}, slots=1) for p in peers]
    assert servers(plans(peers, backlog)) == {A: 1, B: 3, C: 0}


def test_a_pinned_worker_reads_only_its_models() -> None:
    peers = {"w0": Peer("w0", slots=1, serves={A})}
    decided = plan("w0", peers, {B: demand(50, waited=100)}, known={A}, switch_factor=4, max_wait=5, now=NOW)
    assert decided.reading == set()
    decided = plan(
        "w0", peers, {A: demand(1), B: demand(50, waited=100)}, known={A}, switch_factor=4, max_wait=5, now=NOW
    )
    assert decided.reading == {A}


def test_a_worker_plans_around_pinned_workers_and_models_it_cannot_serve() -> None:
    # w0 is pinned to A and idle; w1 serves anything and is busy with C, a model w2 cannot serve
    peers = {
        "w0": Peer("w0", slots=1, serves={A}),
        "w1": Peer("w1", chosen={C: ago(1)}, slots=1),
        "w2": Peer("w2", slots=1, serves={A, B}),
    }
    backlog = {A: demand(1), B: demand(20, waited=10), C: demand(50)}
    # w2 knows only A and B: it takes B, which the pinned w0 cannot serve, and leaves A to w0
    decided = plan("w2", peers, backlog, known={A, B}, switch_factor=4, max_wait=5, now=NOW)
    assert decided.reading == {B}
    decided = plan("w0", peers, backlog, known={A}, switch_factor=4, max_wait=5, now=NOW)
    assert decided.reading == {A}


def test_a_pinned_worker_plans_beside_a_shared_model_it_cannot_serve() -> None:
    # two workers pinned to A share it; w2 is pinned to B and cannot see A as a model it serves:
    # its plan still weighs A's servers (this raised KeyError and skipped the tick: a static worker
    # stalled)
    peers = {
        "w0": Peer("w0", chosen={A: ago(30)}, holds={A}, slots=1, serves={A}),
        "w1": Peer("w1", chosen={A: ago(30)}, holds={A}, slots=1, serves={A}),
        "w2": Peer("w2", chosen={B: ago(30)}, holds={B}, slots=1, serves={B}),
    }
    backlog = {A: demand(50), B: demand(400, waited=10)}
    decided = plan("w2", peers, backlog, known={B}, switch_factor=4, max_wait=5, now=NOW)
    assert decided.reading == {B}


def test_a_worker_lingers_with_a_model_whose_jobs_keep_coming() -> None:
    busy = Peer("w0", chosen={A: ago(3)}, holds={A}, slots=1)
    # A's queue is empty for a moment, but its last job came 0.5 s ago (less than a 2 s load)
    lingering = {
        A: Demand(queued=0, oldest=None, job_seconds=0.1, load_seconds=2.0, last_arrival=ago(0.5)),
        B: demand(3, waited=1),
    }
    assert plans([busy], lingering) == {"w0": {A}}
    # after a burst, nothing more comes: the worker goes to B at once
    drained = {
        A: Demand(queued=0, oldest=None, job_seconds=0.1, load_seconds=2.0, last_arrival=ago(30)),
        B: demand(3, waited=1),
    }
    assert plans([busy], drained) == {"w0": {B}}


def test_a_burst_that_is_in_gets_one_more_server_as_soon_as_it_finishes_sooner() -> None:
    # B holds 3 s of work on one server; a second one that first loads for 2 s finishes it at 2.5 s, not 3
    busy = Peer("w0", chosen={B: ago(5)}, holds={B}, slots=1)
    closed = {B: Demand(queued=30, oldest=ago(5), job_seconds=0.1, load_seconds=2.0, last_arrival=ago(5))}
    assert servers(plans([busy, Peer("w1", slots=1)], closed))[B] == 2
    # while B's jobs keep coming the backlog may be short-lived: one more server only when R / (S + 1) > L
    arriving = {B: dataclasses.replace(closed[B], last_arrival=ago(0.5))}
    assert servers(plans([busy, Peer("w1", slots=1)], arriving))[B] == 1


def test_a_model_not_yet_loaded_counts_as_the_longest_load_measured(tmp_path) -> None:  # noqa: ANN001
    """The controller's costs, from a real job store: before any load the default (on the safe side);
    once one model's load was measured, an unloaded model counts as that long, not as the default,
    so a worker serving a model whose loads are short leaves it in time for the starvation bound."""
    from modelq.celery_app import create_celery_app
    from modelq.config import load_settings
    from modelq.models.affinity import DEFAULT_LOAD_SECONDS, AffinityController

    app = create_celery_app(load_settings(home=tmp_path, broker_url="redis://127.0.0.1:1/0"))
    store = app.modelq.store
    store.migrate()
    for n, model in enumerate(("m0", "m1")):
        store.create(
            id=f"j{n}",
            task="t",
            input={},
            queue=f"default.model.{model}",
            owner="a",
            priority=None,
            window=100,
            weight=1.0,
        )
    controller = AffinityController(app, None, "w@h", ["default"], 1)
    assert {q: d.load_seconds for q, d in controller.demand().items()} == {
        "default.model.m0": DEFAULT_LOAD_SECONDS,
        "default.model.m1": DEFAULT_LOAD_SECONDS,
    }
    row = {
        "model": "m0",
        "device": "cpu",
        "resident": True,
        "bytes": 0,
        "loads": 2,
        "evictions": 0,
        "hits": 0,
        "load_seconds": 3.0,
        "last_used": None,
    }
    store.report_residency("w@h", 1, [row])
    controller = AffinityController(app, None, "w@h", ["default"], 1)
    assert {q: d.load_seconds for q, d in controller.demand().items()} == {
        "default.model.m0": 1.5,
        "default.model.m1": 1.5,
    }


def test_while_a_helper_is_still_loading_a_burst_gets_another_only_if_the_wait_still_exceeds_a_load() -> None:
    # B holds 3 s of work (no more coming) for one server; w1 joined it a moment ago and is loading it
    closed = {B: Demand(queued=30, oldest=ago(5), job_seconds=0.1, load_seconds=1.0, last_arrival=ago(5))}
    busy = Peer("w0", chosen={B: ago(60)}, holds={B}, slots=1)
    loading = Peer("w1", chosen={B: ago(0.2)}, slots=1)
    # then the free w2 stays out: R / (S + 1) = 1 s is not longer than the load
    assert servers(plans([busy, loading, Peer("w2", slots=1)], closed))[B] == 2
    # but once w1 has loaded, a burst that is in gets one more as soon as R / S = 1.5 s > L
    loaded = Peer("w1", chosen={B: ago(5)}, holds={B}, slots=1)
    assert servers(plans([busy, loaded, Peer("w2", slots=1)], closed))[B] == 3


def test_two_workers_that_decide_at_the_same_moment_take_a_model_on_one_at_a_time(tmp_path) -> None:  # noqa: ANN001
    """Two idle workers tick together, each from a snapshot without the other's choice: only one of
    them takes the model (and loads it), because taking a model on is decided again under a lock."""
    from modelq.celery_app import create_celery_app
    from modelq.config import load_settings
    from modelq.models.affinity import AffinityController

    app = create_celery_app(load_settings(home=tmp_path, broker_url="redis://127.0.0.1:1/0"))
    store = app.modelq.store
    store.migrate()
    store.create(
        id="j0", task="t", input={}, queue="default.model.m0", owner="a", priority=None, window=100, weight=1.0
    )
    first, second = (AffinityController(app, None, name, ["default"], 1) for name in ("a@h", "b@h"))
    stale = first.snapshot(NOW)
    assert stale == []  # neither has published yet: each sees itself alone
    for controller in (first, second):
        controller.snapshot = lambda now: stale  # type: ignore[method-assign]
    first.tick()
    second.tick()
    assert [set(first.chosen), set(second.chosen)] == [{"default.model.m0"}, set()]
    chosen = {(row["worker"], row["queue"]) for row in store.consumers(NOW - timedelta(days=1)) if row["chosen"]}
    assert chosen == {("a@h", "default.model.m0")}

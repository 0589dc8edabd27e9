"""Placement: which model queues each worker reads, decided from what every worker holds and reads.

A pure function of a snapshot, so every worker computes the same plan from the same view and
takes its own part of it; nothing central decides. The snapshot (:class:`Peer` per live worker,
:class:`Demand` per model queue) comes from the job store (see :mod:`modelq.models.affinity`).

The rules, in the order :func:`plan` applies them:

1. **Nothing queued**: read the queues of the models the worker holds, so a job for one of them
   starts at once. Any other job waits for the next tick, when the plan gives its model to one
   worker: reading every queue while idle would let each idle worker fetch a job of some model
   and load it before any plan was made.
2. **No model limit**: read every model queue with a backlog.
3. **Stay**: a worker keeps the models it has chosen while they have a backlog, and while their
   jobs keep arriving (the newest one came less than a load time ago), so a queue that empties
   between arrivals does not cost a load away and a load back.
4. **Free slots** (a worker whose chosen models have no backlog and no recent arrival) go, in name order, to the models
   that need a server: first a model nobody serves (one the worker holds, else the oldest job
   first), then a served model whose expected wait with one more server, R / (S + 1) for R
   seconds of queued work and S servers, is still longer than a load (a worker that already holds
   the model pays none). One more server that first loads for L finishes the work sooner as soon
   as R / S > L, and that is the rule once no job of the model arrived for a load time (a burst
   that is in: R is all there is). While jobs keep arriving it asks for R / (S + 1) > L, which
   keeps steady arrivals from moving workers on every short-lived backlog (``modelq bench
   cluster``, Poisson arrivals on 4 workers: 4 loads in a minute with this rule, 27 with
   R / S > L). So it does while a worker that joined its working servers is still loading it: at the end of
   a burst, when the hot model's servers run out of work together, one of them joins another
   model as soon as R / S > L, and a second one only if R / (S + 1) > L with the first counted
   (each further helper saves less: with R = 1.5 L on one server, a second helper would save a
   twelfth of the load it pays). Two idle workers never both take a cold model: the plan gives it
   one of them, and gives the other one only if the expected wait still exceeds a load; a plan
   that takes on a model is made again under a lock, so workers that decide at the same moment
   see each other's choice (see :mod:`modelq.models.affinity`).
5. **Overdue models** nobody serves, once their oldest job has waited ``max_wait`` seconds (since it
   was submitted, or since the job before it started, whichever is later), take
   a busy worker: one whose model has other servers, or else one that has served its model for
   at least ``k`` loads of the model it would load (``k = switch_factor``, the *measured* load
   time). So a switch is paid for by ``k`` loads' worth of work, even when every job is overdue.
   Of the sole servers, the one whose model had the least work arrive lately moves; the server of
   a busier model does not move while one of a quieter model is still short of its ``k`` loads
   (it will be free within them): on 2 workers and 3 models, the hot model keeps its worker and
   the other worker takes turns with the two cold ones, as a person would place them.
6. **Rebalance**: a worker of a model with several servers moves to another model when, after the
   move, that model's work per server still exceeds the load plus the work per server it leaves.

A model with ``max_concurrency`` N (``models.<name>.max_concurrency``) never gets an N + 1-th
server from rules 4 and 6: fair dispatch lets only N of its jobs out at once (see
:mod:`modelq.jobs.dispatch`), so one more worker would load it and wait.

**Starvation bound.** The oldest queued job of model ``m`` starts within
``max_wait + (M - 1) x ((k + 1) x L + J) + L`` seconds (from when the job before it started) on one worker (M models with a backlog,
L the longest load, J the longest job; a model not loaded yet counts as the longest load measured,
and only before any load was measured as 5 s): after ``max_wait`` its model is overdue; each of the at
most ``M - 1`` models served before it holds the worker for ``k x L`` (or until its backlog
empties) plus its load and the job in flight; then ``m`` loads. Overdue models go in the order their
oldest jobs began to wait, so a model just served does not go again before one waiting longer, even
when a burst submitted all their jobs at once. More workers only shorten it.
A job behind others of its model also waits for the work queued ahead of it, which no switching
rule bounds when jobs arrive faster than the workers serve them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


def starvation_bound(
    models: int, load_seconds: float, job_seconds: float, *, switch_factor: float, max_wait: float
) -> float:
    """The longest a queued job waits to start on one worker (see the module docstring):
    ``max_wait + (M - 1) x ((k + 1) x L + J) + L``."""
    return max_wait + (models - 1) * ((switch_factor + 1) * load_seconds + job_seconds) + load_seconds


@dataclass(frozen=True)
class Demand:
    """One model queue's backlog and costs."""

    queued: int
    oldest: datetime | None
    #: Typical seconds one job runs (measured; a default before any job finished).
    job_seconds: float
    #: Seconds a load of the model takes (measured; a default before the first load).
    load_seconds: float
    #: When its newest job arrived (None: not lately).
    last_arrival: datetime | None = None
    #: When a job of it last started (None: not lately): its queued jobs wait for a worker since then.
    served_at: datetime | None = None
    #: The model's ``max_concurrency``: no more workers than this serve it (None: no cap).
    cap: int | None = None
    #: Jobs that arrived lately (within one stint, k loads): how busy the model keeps its servers.
    arrived: int = 0

    def waiting_since(self) -> datetime | None:
        """Since when its oldest queued job has waited for a worker: its submission, or the start of
        the job before it, whichever is later (a burst's jobs were all submitted long ago, yet a
        model served a moment ago has not waited)."""
        if self.oldest is None or self.served_at is None:
            return self.oldest
        return max(self.oldest, self.served_at)

    def full(self, servers: int) -> bool:
        """Whether ``servers`` workers already run as many of its jobs as its cap allows."""
        return self.cap is not None and servers >= self.cap

    @property
    def work(self) -> float:
        return self.queued * self.job_seconds

    @property
    def recent_work(self) -> float:
        """Seconds of work that arrived lately: its demand, whether or not its servers keep up."""
        return self.arrived * self.job_seconds


@dataclass
class Peer:
    """A live worker as the snapshot shows it."""

    name: str
    #: Model queues it has chosen (committed to), with when it chose each.
    chosen: dict[str, datetime] = field(default_factory=dict)
    #: Model queues whose model it holds or is loading.
    holds: set[str] = field(default_factory=set)
    #: Models it may hold at once (None: no limit).
    slots: int | None = None
    #: Model queues it can serve (None: any).
    serves: set[str] | None = None

    def can_serve(self, queue: str) -> bool:
        return self.serves is None or queue in self.serves


@dataclass(frozen=True)
class Plan:
    #: The model queues to read.
    reading: set[str]
    #: Those of them this worker commits to (counted as served by it in other workers' plans).
    chosen: set[str]


def plan(
    me: str,
    peers: dict[str, Peer],
    demand: dict[str, Demand],
    *,
    known: set[str],
    switch_factor: float,
    max_wait: float,
    now: datetime,
) -> Plan:
    """The model queues worker ``me`` should read (see the module docstring for the rules).

    Args:
        me: this worker's name; ``peers[me]`` is its own state.
        peers: every live worker, this one included.
        demand: per model queue; queues with nothing queued may be absent.
        known: every model queue this worker can serve.
        switch_factor: ``k``: loads' worth of service before a sole server leaves its model.
        max_wait: seconds a model nobody serves waits before it may take a busy worker.
    """
    self = peers[me]
    waiting = {q: d for q, d in demand.items() if d.queued > 0 and q in known}
    if not waiting:
        return Plan(reading=self.holds & known, chosen=set())
    if self.slots is None:
        return Plan(reading=set(waiting), chosen=set(waiting))

    # Who serves what: commitments to models that have a backlog, or had a job arrive within one
    # load time (a worker lingers that long with a model whose jobs keep coming: leaving it the
    # moment its queue is empty would pay a load now and another to come back). Other workers'
    # may be models this one cannot serve: they fill those workers' slots all the same.
    backlogged = {
        q
        for q, d in demand.items()
        if d.queued > 0 or (d.last_arrival is not None and (now - d.last_arrival).total_seconds() < d.load_seconds)
    }
    busy = {name: {q: since for q, since in p.chosen.items() if q in backlogged} for name, p in peers.items()}
    servers = {q: sum(1 for b in busy.values() if q in b) for q in backlogged}

    def free_slots(name: str) -> int:
        slots = peers[name].slots
        return len(waiting) if slots is None else max(slots - len(busy[name]), 0)

    def cost(name: str, queue: str) -> float:
        return 0.0 if queue in peers[name].holds else waiting[queue].load_seconds

    def expected_wait(queue: str, extra: int = 0) -> float:
        # from the whole demand: another worker's model may be one this worker cannot serve (not in
        # ``waiting``), or have no job queued while its jobs keep arriving (no work left to share)
        work = demand[queue].work if queue in demand else 0.0
        return work / max(servers[queue] + extra, 1)

    def closed(queue: str) -> bool:
        """No job arrived for a load time, and no worker joined it lately to help its servers (one
        still loading it while another already works on it): its queued work is all the work (a
        burst that is in), and nobody just came to share it."""
        load = waiting[queue].load_seconds
        last = waiting[queue].last_arrival
        if last is not None and (now - last).total_seconds() < load:
            return False
        joined = [(now - b[queue]).total_seconds() < load for b in busy.values() if queue in b]
        return not (any(joined) and not all(joined))

    def age(queue: str) -> float:
        since = waiting[queue].waiting_since()
        return (now - since).total_seconds() if since else 0.0

    def take(name: str, queue: str, leaving: str | None = None) -> None:
        if leaving is not None:
            del busy[name][leaving]
            servers[leaving] -= 1
        busy[name][queue] = peers[name].chosen.get(queue, now)
        servers[queue] += 1

    # 4. Free slots, in name order, to the models that need a server.
    while True:
        candidates = [
            (name, q)
            for name in sorted(peers)
            if free_slots(name)
            for q in waiting
            if q not in busy[name] and peers[name].can_serve(q)
        ]
        needy = [
            (name, q)
            for name, q in candidates
            if not waiting[q].full(servers[q])
            and (servers[q] == 0 or expected_wait(q, 0 if closed(q) else 1) > cost(name, q))
        ]
        if not needy:
            break
        # Unserved models first, to a worker that holds one (no load), else oldest job first; then the
        # longest expected wait beyond the cost; for one model, a worker that holds it, then by name.
        name, queue = min(
            needy,
            key=lambda c: (
                servers[c[1]] > 0,
                cost(*c) > 0,
                -age(c[1]) if servers[c[1]] == 0 else cost(*c) - expected_wait(c[1]),
                c[0],
            ),
        )
        take(name, queue)

    # 5. Overdue models nobody serves take a busy worker (one mover per model per tick): the server
    # of a shared model, else the sole server of the quietest model, once it has served k loads.
    for queue in sorted((q for q in waiting if servers[q] == 0 and age(q) >= max_wait), key=lambda q: -age(q)):
        movers, not_yet = [], []
        for name in sorted(peers):
            if not peers[name].can_serve(queue) or free_slots(name):
                continue
            for held, since in busy[name].items():
                shared = servers[held] >= 2
                stint = (now - since).total_seconds()
                quiet = demand[held].recent_work if held in demand else 0.0
                if shared or stint >= switch_factor * cost(name, queue):
                    movers.append((not shared, quiet, -servers[held], -stint, name, held))
                else:
                    not_yet.append(quiet)
        if not movers:
            continue
        sole, quiet, *_, name, held = min(movers)
        if sole and not_yet and min(not_yet) < quiet:
            continue  # a quieter model's server may move within k loads: the busier model keeps its only one
        take(name, queue, leaving=held)

    # 6. Rebalance: one move per tick, the one that gains most.
    moves = []
    for name in sorted(peers):
        for held in busy[name]:
            if servers[held] < 2 or name != max(n for n in peers if held in busy[n]):
                continue  # only the last-named server of a shared model moves, so two never move at once
            stays = expected_wait(held, -1)
            for queue in waiting:
                if queue in busy[name] or not peers[name].can_serve(queue) or waiting[queue].full(servers[queue]):
                    continue
                gain = expected_wait(queue, 1) - cost(name, queue) - stays
                if gain > 0:
                    moves.append((-gain, name, queue, held))
    if moves:
        _, name, queue, held = min(moves)
        take(name, queue, leaving=held)

    mine = set(busy[me])
    return Plan(reading=mine | (self.holds & known if not mine else set()), chosen=mine)

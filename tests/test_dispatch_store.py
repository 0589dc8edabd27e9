"""Fair dispatch in the job store (SQLite and PostgreSQL): which jobs are held, and the order and
number released (modelq.jobs.dispatch has the rules)."""

from __future__ import annotations

import threading
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from modelq.jobs.store import JobStore

pytestmark = pytest.mark.fast

Q = "default"


def submit(
    store: JobStore,
    owner: str,
    *,
    window: int = 2,
    weight: float = 1.0,
    queue: str = Q,
    priority: int | None = None,
    hold: bool = False,
) -> dict:
    job, created = store.create(
        id=f"{owner}-{uuid.uuid4().hex[:8]}",
        task="echo",
        input={},
        queue=queue,
        owner=owner,
        priority=priority,
        window=window,
        weight=weight,
        hold=hold,
    )
    assert created
    return job


def start(store: JobStore, job_id: str, queue: str = Q) -> None:
    assert store.mark_running(job_id, worker="w", task="echo", queue=queue, input={}) == 1


def owners(released: list[dict]) -> str:
    return "".join(job["id"][0] for job in released)


def test_a_queue_keeps_at_most_a_window_of_jobs_on_the_broker_and_holds_the_rest(store: JobStore) -> None:
    store.migrate()
    first, second, third = (submit(store, "a") for _ in range(3))
    assert (first["held"], second["held"], third["held"]) == (False, False, True)
    assert store.release(Q, window=2) == []  # two wait on the broker: no room
    start(store, first["id"])
    assert [job["id"] for job in store.release(Q, window=2)] == [third["id"]]
    assert store.get(third["id"])["status"] == "queued"


def test_fair_order_equal_weights_and_three_to_one(store: JobStore) -> None:
    store.migrate()
    for _ in range(8):
        submit(store, "a", window=1, queue="q1")
    for _ in range(4):
        submit(store, "b", window=1, queue="q1")
    # a's first went to the broker at once; of the held ones, a and b alternate from the head on
    assert owners(store.release("q1", window=100)) == "abababab" + "aaa"
    for _ in range(9):
        submit(store, "a", window=1, queue="q2", weight=3.0)
    for _ in range(9):
        submit(store, "b", window=1, queue="q2")
    order = owners(store.release("q2", window=100))
    assert order[:8].count("a") == 6 and order[:8].count("b") == 2  # 3:1 while both wait


def test_an_owner_alone_gets_every_turn(store: JobStore) -> None:
    store.migrate()
    jobs = [submit(store, "a", window=1) for _ in range(5)]
    released = store.release(Q, window=100)
    assert [job["id"] for job in released] == [job["id"] for job in jobs[1:]]  # in submission order


def test_interactive_jobs_go_first_and_positions_follow_the_release_order(store: JobStore) -> None:
    store.migrate()
    batch = [submit(store, "a", window=1) for _ in range(4)]
    urgent = submit(store, "b", window=1, priority=9)
    assert urgent["held"]
    assert store.get(urgent["id"])["queue_position"] == 2  # behind the one on the broker only
    assert [store.get(job["id"])["queue_position"] for job in batch] == [1, 3, 4, 5]
    listed = {
        job["id"]: job["queue_position"] for job in store.changed_since(datetime.now(timezone.utc), None, limit=100)
    }
    assert listed[urgent["id"]] == 2 and listed[batch[3]["id"]] == 5
    assert store.release(Q, window=2)[0]["id"] == urgent["id"]


def test_held_jobs_are_not_counted_against_the_broker_by_the_reconciler(store: JobStore) -> None:
    store.migrate()
    released, held = submit(store, "a", window=1), submit(store, "a", window=1)
    until = datetime.now(timezone.utc) + timedelta(seconds=1)
    assert [job["id"] for job in store.queued_until(until, limit=10)] == [released["id"]]
    assert store.held_queues() == [Q] and held["held"]


def test_a_model_cap_holds_across_queues_and_concurrent_releases(store: JobStore) -> None:
    store.migrate()
    queues = ["gpu.model.m", "cpu.model.m"]
    for n in range(20):
        submit(store, "a", queue=queues[n % 2], hold=True, window=100)
    got: list[dict] = []
    lock = threading.Lock()

    def release(queue: str) -> None:
        for _ in range(5):
            out = store.release(queue, window=100, cap=3, cap_model="m")
            with lock:
                got.extend(out)

    threads = [threading.Thread(target=release, args=(queues[n % 2],)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(got) == 3  # never more than the cap out at once, whoever releases
    start(store, got[0]["id"], got[0]["queue"])
    assert store.release(got[0]["queue"], window=100, cap=3, cap_model="m") == []  # running still counts
    assert store.mark_succeeded(got[0]["id"], None)
    assert len(store.release(queues[0], window=100, cap=3, cap_model="m")) == 1


def test_a_retry_waiting_for_its_countdown_takes_no_room_in_the_window(store: JobStore) -> None:
    store.migrate()
    first = submit(store, "a", window=1)
    start(store, first["id"])
    assert store.mark_retrying(first["id"], "boom", due=datetime.now(timezone.utc) + timedelta(seconds=60))
    assert not submit(store, "a", window=1)["held"]  # the retry's message is not due: room for one
    assert submit(store, "a", window=1)["held"]


def test_a_release_the_broker_refuses_puts_every_job_it_took_back_among_the_held(tmp_path) -> None:  # noqa: ANN001
    from modelq.celery_app import create_celery_app
    from modelq.config import load_settings
    from modelq.jobs import dispatch

    # a broker that is down when a worker starting a job releases the next ones
    settings = load_settings(home=tmp_path, broker_url="redis://127.0.0.1:1/0", dispatch_window=3)
    app = create_celery_app(settings)
    store = app.modelq.store
    store.migrate()
    jobs = [submit(store, "a", window=3, hold=True) for _ in range(3)]
    assert dispatch.release(app, Q) == 0
    # nothing is left marked released without a message (it would keep its room in the window and
    # never run): all three wait, held, for the next release, in their order
    assert store.held_counts() == {Q: 3}
    assert store.window_state(Q) == (0, True)
    assert [job["id"] for job in store.release(Q, window=3)] == [job["id"] for job in jobs]


def test_latest_starts_tell_when_a_queue_was_last_served(store: JobStore) -> None:
    store.migrate()
    since = datetime.now(timezone.utc) - timedelta(seconds=60)
    first, second = submit(store, "a", window=100), submit(store, "a", window=100)
    other = submit(store, "a", window=100, queue="default.model.x")
    assert store.latest_starts("default", since) == {}  # nothing ran yet
    for job in (first, second):
        start(store, job["id"])
        assert store.mark_succeeded(job["id"], None)
    start(store, other["id"], "default.model.x")  # still running: not counted until it ends
    latest = store.latest_starts("default", since)
    assert set(latest) == {Q} and latest[Q] == datetime.fromisoformat(store.get(second["id"])["started_at"])


def test_arrivals_tell_the_newest_job_and_how_many_came_lately(store: JobStore) -> None:
    store.migrate()
    now = datetime.now(timezone.utc)
    for _ in range(3):
        submit(store, "a", window=100)
    newest = submit(store, "a", window=100, queue="default.model.x")
    arrivals = store.arrivals("default", now - timedelta(seconds=60), now - timedelta(seconds=60))
    assert {q: count for q, (_latest, count) in arrivals.items()} == {Q: 3, "default.model.x": 1}
    assert arrivals["default.model.x"][0] == datetime.fromisoformat(store.get(newest["id"])["created_at"])
    # counted from a later moment, none came since, yet the newest arrival is still told
    later = store.arrivals("default", now - timedelta(seconds=60), datetime.now(timezone.utc) + timedelta(seconds=1))
    assert {q: count for q, (_latest, count) in later.items()} == {Q: 0, "default.model.x": 0}

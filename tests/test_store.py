"""The job store on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from modelq.jobs.store import JobStore

pytestmark = pytest.mark.fast


def _new(store: JobStore, **fields) -> dict:
    job, created = store.create(
        id=str(uuid.uuid4()),
        task=fields.pop("task", "echo"),
        input=fields.pop("input", {}),
        queue=fields.pop("queue", "default"),
        **fields,
    )
    assert created
    return job


def test_migrate_is_idempotent(store: JobStore) -> None:
    store.migrate()
    store.migrate()
    assert store.counts() == {}


def test_life_of_a_job(store: JobStore) -> None:
    job = _new(store, input={"x": 1})
    assert job["status"] == "queued" and job["attempts"] == 0
    assert store.mark_running(job["id"], worker="w1", task="echo", queue="default", input={"x": 1}) == 1
    assert store.set_progress(job["id"], 0.5, "half way")
    running = store.get(job["id"])
    assert running["status"] == "running" and running["progress"] == {"fraction": 0.5, "message": "half way"}
    assert running["worker"] == "w1" and running["attempts"] == 1
    assert store.mark_succeeded(job["id"], {"x": 1})
    done = store.get(job["id"])
    assert done["status"] == "succeeded" and done["result"] == {"x": 1} and done["progress"]["fraction"] == 1.0
    assert done["finished_at"] >= done["started_at"] >= done["created_at"]


def test_a_finished_job_is_never_overwritten(store: JobStore) -> None:
    job = _new(store)
    assert store.cancel(job["id"])
    # a worker that picks it up late must not run it, and nothing may resurrect it
    assert store.mark_running(job["id"], worker="w", task="echo", queue="default", input={}) is None
    assert not store.mark_succeeded(job["id"], {"late": True})
    assert not store.mark_failed(job["id"], "late")
    assert not store.set_progress(job["id"], 0.3, None)
    assert store.get(job["id"])["status"] == "cancelled"


def test_a_failed_job_keeps_its_error_structured(store: JobStore) -> None:
    from modelq.errors import InvalidInput, failure_of, failure_of_record, failure_text

    job = _new(store)
    store.mark_running(job["id"], worker="w", task="echo", queue="default", input={})
    # when a task raises an error that names the field at fault and carries its own data
    failure = failure_of(InvalidInput("width must be a multiple of 8, got 30", field="width", limit=8))
    assert store.mark_failed(job["id"], failure_text(failure), failure)
    # then the record keeps both the one line and the structure, which reads back unchanged
    done = store.get(job["id"])
    assert done["error"] == "InvalidInput: width must be a multiple of 8, got 30"
    assert done["failure"] == {
        "type": "InvalidInput",
        "message": "width must be a multiple of 8, got 30",
        "field": "width",
        "details": {"limit": 8},
    }
    assert failure_of_record(done) == done["failure"]
    # and a record written before failures were structured is read back from its one line
    assert failure_of_record({"error": "ModelNotFound: unknown model 'x'", "failure": None})["type"] == "ModelNotFound"


def test_a_message_without_a_record_gets_one(store: JobStore) -> None:
    job_id = str(uuid.uuid4())
    assert store.mark_running(job_id, worker="w", task="echo", queue="cpu", input={"a": 1})
    assert store.get(job_id)["status"] == "running"
    assert store.get(job_id)["queue"] == "cpu"


def test_retry_counts_attempts(store: JobStore) -> None:
    job = _new(store)
    store.mark_running(job["id"], worker="w", task="echo", queue="default", input={})
    assert store.mark_retrying(job["id"], "ValueError: flaky")
    assert store.get(job["id"])["status"] == "queued"
    assert store.mark_running(job["id"], worker="w", task="echo", queue="default", input={}) == 2
    assert store.get(job["id"])["attempts"] == 2


def test_idempotency_key_is_per_owner(store: JobStore) -> None:
    first = _new(store, owner="alice", idempotency_key="k1")
    again, created = store.create(
        id="other", task="echo", input={}, queue="default", owner="alice", idempotency_key="k1"
    )
    assert not created and again["id"] == first["id"]
    bob = _new(store, owner="bob", idempotency_key="k1")
    assert bob["id"] != first["id"]


def test_concurrent_submissions_with_one_key_make_one_job(store: JobStore) -> None:
    ids: list[str] = []
    barrier = threading.Barrier(8)

    def submit(n: int) -> None:
        barrier.wait()
        job, _ = store.create(id=f"race-{n}", task="echo", input={}, queue="default", idempotency_key="same")
        ids.append(job["id"])

    threads = [threading.Thread(target=submit, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(ids)) == 1
    assert store.list().total == 1


def test_list_filters_paginates_and_hides_other_owners(store: JobStore) -> None:
    for n in range(5):
        _new(store, task="echo", owner="alice", input={"n": n})
    _new(store, task="sleep", owner="alice")
    _new(store, task="echo", owner="bob")
    assert store.list(owner="alice").total == 6
    page = store.list(owner="alice", task="echo", limit=2, offset=0)
    assert page.total == 5 and len(page.jobs) == 2
    # newest first
    assert [j["input"]["n"] for j in page.jobs] == [4, 3]
    assert [j["input"]["n"] for j in store.list(owner="alice", task="echo", limit=2, offset=4).jobs] == [0]
    assert store.get(page.jobs[0]["id"], owner="bob") is None


def test_queue_position_counts_jobs_ahead_in_the_same_queue(store: JobStore) -> None:
    a = _new(store, queue="cpu")
    _new(store, queue="gpu")
    b = _new(store, queue="cpu")
    assert store.get(a["id"])["queue_position"] == 1
    assert store.get(b["id"])["queue_position"] == 2
    store.mark_running(a["id"], worker="w", task="echo", queue="cpu", input={})
    assert store.get(b["id"])["queue_position"] == 1
    assert "queue_position" not in store.get(a["id"])


def test_cancel_queued_only_touches_that_queue(store: JobStore) -> None:
    a = _new(store, queue="cpu")
    b = _new(store, queue="io")
    assert store.cancel_queued("cpu", "purged") == 1
    assert store.get(a["id"])["status"] == "cancelled" and store.get(a["id"])["error"] == "purged"
    assert store.get(b["id"])["status"] == "queued"


def test_changed_since_lists_unfinished_jobs_with_positions_and_recent_ones(store: JobStore) -> None:
    from datetime import datetime, timedelta, timezone

    first, second = _new(store, owner="alice"), _new(store, owner="bob")
    running = _new(store, owner="alice")
    store.mark_running(running["id"], worker="w@h", task="echo", queue="default", input={}, runner="worker")
    done = _new(store, owner="alice")
    store.mark_running(done["id"], worker="w@h", task="echo", queue="default", input={}, runner="worker")
    store.mark_succeeded(done["id"], {"ok": True})
    since = datetime.now(timezone.utc) - timedelta(minutes=1)
    rows = {row["id"]: row for row in store.changed_since(since, None, limit=100)}
    # queued jobs carry their place in the queue; large columns are left out
    assert rows[first["id"]]["queue_position"] == 1 and rows[second["id"]]["queue_position"] == 2
    assert rows[running["id"]]["queue_position"] is None and rows[done["id"]]["status"] == "succeeded"
    assert "input" not in rows[first["id"]] and "result" not in rows[done["id"]]
    # one owner sees only their own; a window after the finish leaves the finished job out
    assert {row["id"] for row in store.changed_since(since, "alice", limit=100)} == {
        first["id"],
        running["id"],
        done["id"],
    }
    later = datetime.now(timezone.utc) + timedelta(minutes=1)
    assert done["id"] not in {row["id"] for row in store.changed_since(later, None, limit=100)}


def test_a_database_whose_llm_buckets_table_came_before_its_migration_upgrades(store: JobStore) -> None:
    from modelq.workloads.llm.ratelimit import DatabaseBuckets, Limits

    # given a store at revision 0003 that already has the buckets table (made by the llm workload itself then)
    store.migrate()
    with store.transaction() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0003'"))
        conn.execute(text("DROP TABLE modelq_model_consumers"))  # revision 0005's, not there at 0003
        conn.execute(text("DROP TABLE modelq_leases"))  # revision 0006's
        conn.execute(text("DROP TABLE modelq_queue_reports"))
        conn.execute(text("ALTER TABLE modelq_jobs DROP COLUMN republished"))
        conn.execute(text("ALTER TABLE modelq_jobs DROP COLUMN heartbeat_at"))  # revision 0007's
        conn.execute(text("DROP INDEX ix_modelq_jobs_dispatch"))  # revision 0008's
        conn.execute(text("ALTER TABLE modelq_jobs DROP COLUMN released_at"))
        conn.execute(text("ALTER TABLE modelq_jobs DROP COLUMN fair_tag"))
        conn.execute(text("DROP TABLE modelq_dispatch_locks"))
        conn.execute(text("ALTER TABLE modelq_jobs DROP COLUMN failure"))  # revision 0009's
        conn.execute(text("ALTER TABLE modelq_jobs DROP COLUMN handed_over_at"))  # revision 0010's
    # when it is migrated, revision 0004 keeps the table, and the buckets work
    store.migrate()
    with store.transaction() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == "0010"
    limits = Limits(request_rate=1.0, request_capacity=1.0, token_rate=0.0, token_capacity=0.0)
    assert DatabaseBuckets(store.engine).take("upgrade-test", limits, 1.0, 0.0) == 0.0


def test_a_job_handed_over_is_reported_on_and_finished_by_its_later_tasks(store: JobStore) -> None:
    from modelq.errors import InvalidInput
    from modelq.tasks import HandedOverJob

    woken = []
    job = _new(store, input={"ctt": "Name: x"})
    store.mark_running(job["id"], worker="w1", task="echo", queue="default", input={"ctt": "Name: x"})
    soon = datetime.now(timezone.utc) + timedelta(hours=1)
    assert job["id"] in [j["id"] for j in store.running_before(soon, quiet_since=soon, limit=10)]
    store.mark_handed_over(job["id"])  # its task handed it over: no heartbeat, and not the reconciler's to requeue
    assert job["id"] not in [j["id"] for j in store.running_before(soon, quiet_since=soon, limit=10)]
    later = HandedOverJob(job["id"], store, lambda job_id, result: woken.append((job_id, result)))
    assert later.status() == "running" and later.input() == {"ctt": "Name: x"}
    assert later.progress(1.5, "epoch 2/2") and store.get(job["id"])["progress"]["fraction"] == 1.0
    assert later.succeed({"best": 3}) and woken == [(job["id"], {"best": 3})]
    assert store.get(job["id"])["result"] == {"best": 3}
    # a finished job is not finished again, and nobody is woken twice
    assert not later.succeed({"best": 4}) and len(woken) == 1
    assert not later.progress(0.5)

    failing = _new(store)
    store.mark_running(failing["id"], worker="w1", task="echo", queue="default", input={})
    HandedOverJob(failing["id"], store, lambda *_: None).fail(
        InvalidInput("bad room", field="rooms"), where="island 1 failed in epoch 2"
    )
    record = store.get(failing["id"])
    assert record["status"] == "failed" and record["error"] == "island 1 failed in epoch 2: InvalidInput: bad room"
    assert record["failure"]["type"] == "InvalidInput" and record["failure"]["field"] == "rooms"

    with pytest.raises(LookupError):
        HandedOverJob("no-such-job", store, lambda *_: None).input()

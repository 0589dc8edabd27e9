"""A process that forks while one of its threads writes the SQLite job store: the fork waits for the
write to end, and the child uses the store (a prefork worker's parent reconciles while it forks its
pool processes: modelq.jobs.fork_guard)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from sqlalchemy import text

from modelq.jobs.store import JobStore

pytestmark = pytest.mark.fast


def test_a_fork_waits_for_a_thread_inside_the_sqlite_store_and_the_child_can_write(tmp_path: Path) -> None:
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}", lock_dir=tmp_path)
    store.migrate()
    inside, leave = threading.Event(), threading.Event()

    def write_slowly() -> None:
        with store.transaction() as conn:
            conn.execute(text("DELETE FROM modelq_jobs WHERE id = 'none'"))  # holds the write lock from here
            inside.set()
            leave.wait(10)

    writer = threading.Thread(target=write_slowly)
    writer.start()
    assert inside.wait(10)
    threading.Timer(0.5, leave.set).start()
    pid = os.fork()
    if pid == 0:  # the child writes with a connection of its own; a lock it inherited would hold it for good
        code = 1
        try:
            with store.engine.begin() as conn:
                conn.execute(text("PRAGMA busy_timeout=5000"))  # fail in 5 s, not the store's 30
                conn.execute(text("DELETE FROM modelq_jobs WHERE id = 'none'"))
            code = 0
        finally:
            os._exit(code)
    # the fork came only once the writer had left the store
    assert leave.is_set()
    writer.join(10)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    store.dispose()

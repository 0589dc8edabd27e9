"""Keep a fork out of SQLite: a process forks only while none of its threads is using the job store.

A prefork worker's parent forks its pool processes (at start, and to replace one that exited) while
its own threads (the reconciler, the model placement) read and write the job store. SQLite keeps
its lock bookkeeping per process, in memory: a child forked while another thread of the parent was
inside a transaction inherits a lock that no connection of its own holds, and finds the database
locked for good (a crashed pool process's replacement stuck on "database is locked").

So every SQLite engine of the process counts its connections checked out of the pool, and a fork
(:func:`os.register_at_fork`) waits until none is, holding back new ones meanwhile. A thread that
already has one out may take more (it is not waited for: that would wait for itself). A connection
held longer than :data:`FORK_WAIT_SECONDS` (a leak) no longer holds the fork: it goes ahead, logged.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from sqlalchemy import Engine, event

log = logging.getLogger(__name__)

#: A fork waits at most this long for the job store's connections to come back.
FORK_WAIT_SECONDS = 30.0


class ForkGuard:
    """The connections this process's threads have checked out of its SQLite engines."""

    def __init__(self) -> None:
        self._registered = False
        self._reset()

    def _reset(self) -> None:
        self._changed = threading.Condition()
        #: Per connection out (its pool record), the thread that took it.
        self._out: dict[int, int] = {}
        self._forking = False

    def watch(self, engine: Engine) -> None:
        """Count ``engine``'s checked-out connections; forks of this process wait for them."""
        event.listen(engine, "checkout", self._checkout)
        event.listen(engine, "checkin", self._checkin)
        if not self._registered:
            self._registered = True
            os.register_at_fork(before=self._before_fork, after_in_parent=self._after_fork, after_in_child=self._reset)

    def _held_here(self) -> int:
        me = threading.get_ident()
        return sum(1 for thread in self._out.values() if thread == me)

    def _checkout(self, _dbapi: Any, record: Any, _proxy: Any) -> None:
        with self._changed:
            if not self._held_here():
                while self._forking:
                    self._changed.wait()
            self._out[id(record)] = threading.get_ident()

    def _checkin(self, _dbapi: Any, record: Any) -> None:
        with self._changed:
            if self._out.pop(id(record), None) is not None:
                self._changed.notify_all()

    def _before_fork(self) -> None:
        self._changed.acquire()
        self._forking = True
        deadline = time.monotonic() + FORK_WAIT_SECONDS
        while len(self._out) > self._held_here():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.warning("forking while %d job store connection(s) are still in use", len(self._out))
                break
            self._changed.wait(remaining)

    def _after_fork(self) -> None:
        self._forking = False
        self._changed.notify_all()
        self._changed.release()


#: The guard of this process (a forked child starts with nothing out).
fork_guard = ForkGuard()

"""What the scenarios share: child processes that always get stopped, polling with a deadline,
free ports, a hermetic environment, percentiles, an in-process API server."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from modelq import testing
from modelq.bench import BenchError
from modelq.testing import child_env, free_port  # noqa: F401 - the benches import them from here

T = TypeVar("T")


def hermetic_settings(home: Path, env: dict[str, str] | None = None) -> Any:
    """The settings a bench subprocess sees: ``child_env(home, **env)``, run in ``home``.

    No ``MODELQ_*`` variable, ``.env`` or ``modelq.yml`` of the caller leaks in, so this
    process and its children agree on the broker, the job store and the queues.
    """
    from modelq.config import load_settings

    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    try:
        for key in [k for k in os.environ if k.startswith("MODELQ_")]:
            del os.environ[key]
        os.environ["MODELQ_HOME"] = str(home)
        os.environ.update(env or {})
        os.chdir(home)
        return load_settings()
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)


def wait_until(
    predicate: Callable[[], T],
    *,
    timeout: float,
    what: str,
    interval: float = 0.02,
    check: Callable[[], None] | None = None,
) -> T:
    """:func:`modelq.testing.wait_until`, giving up with :class:`BenchError` (a bench's one-line error)."""
    try:
        return testing.wait_until(predicate, timeout, what=what, interval=interval, check=check)
    except testing.TimedOut as exc:
        raise BenchError(str(exc)) from None


def wait_for_pings(app: Any, hostnames: list[str], *, timeout: float, check: Callable[[], None] | None = None) -> None:
    """Wait until every worker named answers a ping (``check`` raises to stop early, e.g. one exited)."""
    pending = set(hostnames)

    def answered() -> bool:
        for reply in app.control.ping(destination=sorted(pending), timeout=0.5) or []:
            pending.difference_update(reply)
        return not pending

    wait_until(answered, timeout=timeout, what="the workers to answer a ping", interval=0.05, check=check)


def interleaved(
    calls: dict[str, Callable[[int], Any]], n: int, check: Callable[[str, int, Any], None] | None = None
) -> dict[str, list[float]]:
    """Time ``n`` calls per side, the sides taking turns call by call in a rotating order,
    so machine noise falls on all of them alike. ``check(side, i, answer)`` sees every answer."""
    sides = list(calls)
    samples: dict[str, list[float]] = {side: [] for side in sides}
    for i in range(n):
        k = i % len(sides)
        for side in sides[k:] + sides[:k]:
            started = time.perf_counter()
            answer = calls[side](i)
            samples[side].append(time.perf_counter() - started)
            if check is not None:
                check(side, i, answer)
    return samples


def percentile(samples: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100), interpolating linearly between the closest ranks."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    pos = (len(ordered) - 1) * min(max(q, 0.0), 100.0) / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def one_line(text: str, limit: int = 400) -> str:
    flat = " | ".join(line.strip() for line in text.strip().splitlines() if line.strip())
    return flat[-limit:]


class Child:
    """A subprocess in its own session, its output in a log file; :meth:`stop` always ends it."""

    def __init__(self, name: str, argv: list[str], *, env: dict[str, str], cwd: Path, log: Path) -> None:
        self.name = name
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as sink:
            self.proc = subprocess.Popen(
                argv,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, limit: int = 400) -> str:
        try:
            return one_line(self.log.read_text(errors="replace")[-4000:], limit)
        except OSError:
            return ""

    def ensure_alive(self) -> None:
        """Raise :class:`BenchError` (with the end of its log) when the process has exited."""
        if not self.alive():
            raise BenchError(f"{self.name} exited with code {self.proc.returncode}: {self.log_tail() or 'no output'}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        """Send ``sig``, wait up to ``timeout`` seconds, then kill its process group."""
        if self.alive():
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: the group is this child's
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


# Process trees (Linux /proc; elsewhere these see nothing) --------------------------------


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time) of ``pid``, or None when it is gone or a zombie."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    if fields[0] == "Z":
        return None
    return int(fields[1]), int(fields[19])


def process(pid: int) -> tuple[int, int] | None:
    """(pid, start time) of a live process, to tell it from a later one with its pid; None when gone."""
    info = _stat(pid)
    return None if info is None else (pid, info[1])


def descendants(pid: int) -> list[tuple[int, int]]:
    """(pid, start time) of every live descendant of ``pid``."""
    parents: dict[int, list[tuple[int, int]]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if entry.isdigit():
            info = _stat(int(entry))
            if info is not None:
                parents.setdefault(info[0], []).append((int(entry), info[1]))
    found: list[tuple[int, int]] = []
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child[0])
    return found


def still_running(procs: list[tuple[int, int]]) -> list[int]:
    """The pids of ``procs`` that still run (the same process: same start time)."""
    alive = []
    for pid, started in procs:
        info = _stat(pid)
        if info is not None and info[1] == started:
            alive.append(pid)
    return alive


def kill_leftovers(procs: list[tuple[int, int]]) -> None:
    for pid in still_running(procs):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def release_results(app: Any) -> None:
    """Close ``app``, first forgetting its result subscriptions, while the broker still runs.

    An ``AsyncResult`` left pending by an interrupted ``get()`` unsubscribes when it is
    garbage-collected; once the broker is gone Celery retries that for ~20 s at exit.
    """
    try:
        consumer = app.backend.result_consumer
        consumer.subscribed_to.clear()
        consumer.stop()
    except Exception:  # noqa: BLE001 - a backend without a result consumer has nothing to forget
        pass
    app.close()


# The API in this process --------------------------------------------------------------------


@contextmanager
def serve_api(settings: Any, *, celery_app: Any = None, timeout: float = 30.0) -> Iterator[str]:
    """Run ``modelq.api.create_api(settings)`` with uvicorn in a thread; yields its base URL."""
    from modelq.api import create_api

    api = create_api(settings, celery_app=celery_app)
    try:
        with testing.serving(api, timeout=timeout, access_log=False, lifespan="on") as url:
            yield url
    except testing.TimedOut as exc:
        raise BenchError(str(exc)) from None

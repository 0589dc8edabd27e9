"""External programs run from tasks, the one way: ``modelq.run_exec("wsclean", [...])``.

Programs are named in the config (``execs: {wsclean: /opt/bin/wsclean}``), so a task
never runs an arbitrary path, and always the same way:

* an argument list, never a shell line;
* a timeout, after which the program's whole process group is stopped;
* a working directory;
* an environment built from an allow-list (the worker's secrets stay with the worker);
* stdout and stderr captured, and saved with the job as ``<name>.log``;
* a non-zero exit fails the task with the tail of stderr;
* a cancelled job stops the program within a second.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from modelq.errors import ConfigError, InvalidInput, ModelqError, TaskCancelled

log = logging.getLogger(__name__)

#: Variables every program gets from the worker's environment when set there.
BASE_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR")
#: How much of stderr a failure message quotes.
STDERR_TAIL_LINES = 20
STDERR_TAIL_CHARS = 2000
POLL_SECONDS = 0.5


class ExternalProgramFailed(ModelqError):
    """An external program exited with a non-zero code, or ran past its timeout."""

    def __init__(self, message: str, *, name: str, returncode: int | None) -> None:
        super().__init__(message, program=name, returncode=returncode)
        self.name = name
        self.returncode = returncode


@dataclass(frozen=True)
class ExecResult:
    """What a finished program left: its exit code, output and run time."""

    name: str
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float


def stderr_tail(text: str) -> str:
    tail = "\n".join(text.rstrip().splitlines()[-STDERR_TAIL_LINES:])
    return tail[-STDERR_TAIL_CHARS:]


def _program(name: str, settings: object) -> tuple[str, float | None, list[str]]:
    execs = getattr(settings, "execs", {})
    spec = execs.get(name)
    if spec is None:
        known = ", ".join(sorted(execs)) or "none"
        raise ConfigError("execs", f"no external program named {name!r}; configured: {known}")
    path = Path(spec.path)
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise ConfigError(f"execs.{name}", f"{spec.path} is not an executable file on this worker")
    return str(path), spec.timeout, list(spec.env)


def _environment(allowed: Sequence[str], extra: Mapping[str, str] | None) -> dict[str, str]:
    env = {key: os.environ[key] for key in (*BASE_ENV, *allowed) if key in os.environ}
    env.update({str(k): str(v) for k, v in (extra or {}).items()})
    return env


def _stop(proc: subprocess.Popen) -> None:
    """Stop the program and everything it started (it runs in its own process group)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=5)
            return
        except subprocess.TimeoutExpired:
            continue


def run_exec(
    name: str,
    args: Sequence[str | os.PathLike | int | float] = (),
    *,
    timeout: float | None = None,
    cwd: str | os.PathLike | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
) -> ExecResult:
    """Run the configured program ``name`` with ``args`` and wait for it.

    Args:
        name: a key of the ``execs`` config.
        args: the arguments, one list item each (no shell: nothing is interpreted).
        timeout: seconds before the program is stopped (default: its config's, else none).
        cwd: working directory (default: the worker's).
        env: variables to set, on top of the allow-list (``PATH``, ``HOME``, ``LANG``,
            ``LC_ALL``, ``TZ``, ``TMPDIR`` and the program's ``env:`` list).
        check: raise :class:`ExternalProgramFailed` on a non-zero exit.

    Inside a job, the output is saved as the artifact ``<name>.log`` and a cancelled
    job stops the program.
    """
    from modelq.tasks import current_context, current_settings

    if isinstance(args, str | bytes):
        raise InvalidInput("args must be a list of arguments, not one string (no shell runs it)", field="args")
    path, default_timeout, allowed = _program(name, current_settings())
    argv = [path, *(os.fspath(a) if isinstance(a, os.PathLike) else str(a) for a in args)]
    limit = timeout if timeout is not None else default_timeout
    job = current_context()
    started = time.monotonic()
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=_environment(allowed, env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    stopped: str | None = None
    cancelled = False
    try:
        while True:
            try:
                stdout, stderr = proc.communicate(timeout=POLL_SECONDS)
                break
            except subprocess.TimeoutExpired:
                if limit is not None and time.monotonic() - started > limit:
                    stopped = f"ran past its {limit:g}s timeout and was stopped"
                elif job is not None and job.cancelled():
                    cancelled, stopped = True, "was stopped: the job was cancelled"
                if stopped:
                    _stop(proc)
                    stdout, stderr = proc.communicate()
                    break
    except BaseException:
        _stop(proc)
        raise
    result = ExecResult(
        name=name,
        argv=argv,
        returncode=proc.returncode,
        stdout=stdout,
        stderr=stderr,
        seconds=time.monotonic() - started,
    )
    _save_log(job, result)
    if cancelled:
        raise TaskCancelled(job.id)  # type: ignore[union-attr]
    if stopped:
        raise ExternalProgramFailed(
            f"{name} {stopped}; last stderr: {stderr_tail(stderr) or '(empty)'}", name=name, returncode=None
        )
    if check and result.returncode != 0:
        raise ExternalProgramFailed(
            f"{name} exited with code {result.returncode}: {stderr_tail(stderr) or '(no stderr)'}",
            name=name,
            returncode=result.returncode,
        )
    return result


def _save_log(job: object, result: ExecResult) -> None:
    text = (
        f"$ {' '.join(result.argv)}\n# exit code {result.returncode} after {result.seconds:.2f}s\n"
        f"--- stdout ---\n{result.stdout}--- stderr ---\n{result.stderr}"
    )
    log.info("%s exited with %s after %.2fs", result.name, result.returncode, result.seconds)
    if job is not None:
        try:
            record = job.store.get(job.id, with_position=False) or {}  # type: ignore[attr-defined]
            taken = {artifact["name"] for artifact in record.get("artifacts") or []}
            name, n = f"{result.name}.log", 1
            while name in taken:  # the same program run again in this job: tool-2.log, tool-3.log, ...
                n += 1
                name = f"{result.name}-{n}.log"
            job.save_artifact(name, text.encode(), "text/plain")  # type: ignore[attr-defined]
        except Exception:  # the log is a convenience: never let it hide the program's own outcome
            log.warning("could not save %s.log for job %s", result.name, getattr(job, "id", "?"), exc_info=True)

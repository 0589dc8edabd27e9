"""External programs from tasks: argument lists, environment allow-list, logs, exit codes, timeouts, cancel."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import start_worker, stop_process, wait_for, wait_for_worker

TOOL = """#!/bin/sh
# args one per line, the environment the program sees, a line on stderr, then the exit code asked for
for arg in "$@"; do printf 'arg:%s\\n' "$arg"; done
printf 'secret:%s\\n' "$MODELQ_TEST_SECRET"
printf 'shared:%s\\n' "$MODELQ_TEST_SHARED"
printf 'given:%s\\n' "$GIVEN"
printf 'cwd:%s\\n' "$(pwd)"
echo "warning: something on stderr" >&2
if [ -n "$SLEEP" ]; then sleep "$SLEEP" & echo "$!" > "$PIDFILE"; wait; fi
exit "${EXIT_CODE:-0}"
"""


@pytest.fixture(scope="module")
def worker_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    from modelq.broker import EmbeddedRedis
    from modelq.celery_app import create_celery_app
    from modelq.config import load_settings

    root = tmp_path_factory.mktemp("execs")
    tool = root / "tool.sh"
    tool.write_text(TOOL)
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    execs = {"tool": {"path": str(tool), "env": ["MODELQ_TEST_SHARED"]}, "missing": "/nonexistent/bin/tool"}
    env = {
        "MODELQ_HOME": str(root / "home"),
        "MODELQ_EXECS": json.dumps(execs),
        "MODELQ_TEST_SECRET": "do-not-leak",
        "MODELQ_TEST_SHARED": "shared-value",
    }
    app = create_celery_app(
        load_settings(home=root / "home", execs=execs, imports=["modelq_test_tasks"]), start_broker=True
    )
    app.modelq.store  # noqa: B018
    worker = start_worker(env, "default", "execs@%h")
    try:
        wait_for_worker(app, "execs@")
        yield {"app": app, "root": root}
    finally:
        stop_process(worker)
        EmbeddedRedis(root / "home").stop()


@pytest.fixture
def client(worker_env: dict):  # noqa: ANN201
    from modelq.client import Client

    return Client.in_process(app=worker_env["app"])


def test_arguments_go_through_as_a_list_and_the_output_is_logged(client, tmp_path: Path) -> None:  # noqa: ANN001
    args = ["two words", "$(touch pwned)", "; rm -rf /", "*"]
    job = client.submit("tests.exec", {"name": "tool", "args": args, "env": {"GIVEN": "yes"}, "cwd": str(tmp_path)})
    done = client.wait(job["id"], timeout=60)
    assert done["status"] == "succeeded", done["error"]
    out = done["result"]["stdout"].splitlines()
    # every argument arrived as it was, nothing was interpreted by a shell
    assert [line[4:] for line in out if line.startswith("arg:")] == args
    assert not (tmp_path / "pwned").exists()
    # the worker's secrets stay out; the allow-listed variable and the job's own come in
    assert "secret:" in out and "shared:shared-value" in out and "given:yes" in out
    assert f"cwd:{tmp_path}" in out
    # and the output is saved with the job
    assert [a["name"] for a in done["artifacts"]] == ["tool.log"]
    log = client.artifact(job["id"], "tool.log").decode()
    assert "arg:two words" in log and "warning: something on stderr" in log and "# exit code 0" in log


def test_a_non_zero_exit_fails_the_job_with_the_tail_of_stderr(client) -> None:  # noqa: ANN001
    job = client.submit("tests.exec", {"name": "tool", "args": [], "env": {"EXIT_CODE": "3"}})
    done = client.wait(job["id"], timeout=60)
    assert done["status"] == "failed"
    assert "tool exited with code 3" in done["error"] and "warning: something on stderr" in done["error"]


def test_a_program_past_its_timeout_is_stopped_with_its_children(client, tmp_path: Path) -> None:  # noqa: ANN001
    pidfile = tmp_path / "child.pid"
    job = client.submit(
        "tests.exec", {"name": "tool", "args": [], "timeout": 1, "env": {"SLEEP": "60", "PIDFILE": str(pidfile)}}
    )
    done = client.wait(job["id"], timeout=60)
    assert done["status"] == "failed" and "ran past its 1s timeout and was stopped" in done["error"]
    child = int(pidfile.read_text())
    wait_for(lambda: not _alive(child), timeout=10, what="the program's own child to be stopped too")


def test_cancelling_the_job_stops_the_program(client, tmp_path: Path) -> None:  # noqa: ANN001
    pidfile = tmp_path / "child.pid"
    job = client.submit("tests.exec", {"name": "tool", "args": [], "env": {"SLEEP": "60", "PIDFILE": str(pidfile)}})
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), timeout=30, what="the program to start")
    client.cancel(job["id"])
    child = int(pidfile.read_text())
    wait_for(lambda: not _alive(child), timeout=10, what="the program to be stopped")
    assert client.get(job["id"])["status"] == "cancelled"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("nope", "no external program named 'nope'; configured: missing, tool"),
        ("missing", "/nonexistent/bin/tool is not an executable file on this worker"),
    ],
)
def test_unknown_or_missing_programs_fail_the_job_clearly(client, name: str, message: str) -> None:  # noqa: ANN001
    done = client.wait(client.submit("tests.exec", {"name": name, "args": []})["id"], timeout=60)
    assert done["status"] == "failed" and message in done["error"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()

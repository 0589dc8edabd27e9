"""A real cluster on one machine: broker and two worker hosts in their own network namespaces.

The broker (redis-server) runs in namespace ``head``; workers run in ``w1`` and ``w2``;
jobs are submitted from the root namespace, across a bridge, as from another machine.
The job store is a SQLite file all of them open (the shared-storage stand-in: these
"hosts" share one filesystem). Cutting ``w1``'s link mid-run must lose no job: what
``w1`` had taken but not acknowledged comes back after the visibility timeout and
``w2`` runs it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import child_env, stop_process, wait_for, wait_for_worker
from modelq.testing import worker_command

SUBNET = "10.77.{}.{}"
REDIS_PORT = 6391


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def _namespaces_allowed() -> str | None:
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"mqprobe{os.getpid()}"
    result = _ip("netns", "add", probe, check=False)
    if result.returncode != 0:
        return f"`ip netns add` is not permitted here: {result.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


class Net:
    """A bridge in the root namespace and one namespace per host, each with a veth on the bridge."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:4]
        self.bridge = f"mqbr{tag}"
        self.octet = 100 + os.getpid() % 100
        self.hosts: dict[str, tuple[str, str]] = {}  # name -> (namespace, root-side link)
        self.tag = tag
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{SUBNET.format(self.octet, 1)}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")

    def add_host(self, name: str, index: int) -> str:
        ns, outer, inner = f"mq{name}{self.tag}", f"mq{name}o{self.tag}", f"mq{name}i{self.tag}"
        _ip("netns", "add", ns)
        _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        _ip("link", "set", inner, "netns", ns)
        _ip("link", "set", outer, "master", self.bridge)
        _ip("link", "set", outer, "up")
        address = SUBNET.format(self.octet, index)
        for args in (
            ["addr", "add", f"{address}/24", "dev", inner],
            ["link", "set", inner, "up"],
            ["link", "set", "lo", "up"],
        ):
            _ip("-n", ns, *args)
        self.hosts[name] = (ns, outer)
        return address

    def run(self, host: str, argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
        ns = self.hosts[host][0]
        return subprocess.Popen(
            ["ip", "netns", "exec", ns, *argv], env=env, stdout=log.open("w"), stderr=subprocess.STDOUT
        )

    def cut(self, host: str) -> None:
        _ip("link", "set", self.hosts[host][1], "down")

    def close(self) -> None:
        for ns, outer in self.hosts.values():
            _ip("link", "del", outer, check=False)
            _ip("netns", "del", ns, check=False)
        _ip("link", "del", self.bridge, check=False)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[dict]:
    reason = _namespaces_allowed()
    if reason:
        pytest.skip(reason)
    from modelq.celery_app import create_celery_app
    from modelq.config import load_settings

    net = Net()
    procs: list[subprocess.Popen] = []
    try:
        head = net.add_host("head", 2)
        net.add_host("w1", 3)
        net.add_host("w2", 4)
        redis_server = shutil.which("redis-server") or "/usr/bin/redis-server"
        procs.append(
            net.run(
                "head",
                [
                    redis_server,
                    "--bind",
                    head,
                    "--port",
                    str(REDIS_PORT),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--protected-mode",
                    "no",
                ],
                dict(os.environ),
                tmp_path / "redis.log",
            )
        )
        broker = f"redis://{head}:{REDIS_PORT}/0"
        database = f"sqlite:///{tmp_path / 'shared' / 'jobs.db'}"
        (tmp_path / "shared").mkdir()
        settings = load_settings(
            home=tmp_path / "client",
            broker_url=broker,
            database_url=database,
            imports=["modelq_test_tasks"],
            visibility_timeout=5,
        )
        app = create_celery_app(settings)
        wait_for(lambda: _broker_answers(app), timeout=30, what="the broker in its namespace")
        app.modelq.store  # noqa: B018 - migrate before the workers start
        for host in ("w1", "w2"):
            env = child_env(
                MODELQ_HOME=str(tmp_path / host),
                MODELQ_BROKER_URL=broker,
                MODELQ_DATABASE_URL=database,
                MODELQ_VISIBILITY_TIMEOUT="5",
            )
            argv = worker_command("default", f"{host}@%h", pool="prefork", concurrency=2)
            procs.append(net.run(host, argv, env, tmp_path / f"{host}.log"))
        wait_for_worker(app, "w1@")
        wait_for_worker(app, "w2@")
        yield {"app": app, "net": net, "procs": procs}
    finally:
        for proc in reversed(procs):
            stop_process(proc, timeout=10)
        net.close()


def _broker_answers(app) -> bool:  # noqa: ANN001
    from modelq.broker import check_broker

    try:
        check_broker(app, timeout=1.0)
    except Exception:
        return False
    return True


def test_jobs_from_outside_run_on_both_hosts_and_survive_a_cut_link(cluster: dict) -> None:
    from modelq.client import Client

    client = Client.in_process(app=cluster["app"])
    # given jobs submitted from outside the hosts' namespaces
    first = [client.submit("sleep", {"seconds": 0.4, "steps": 2})["id"] for _ in range(12)]
    done = [client.wait(job_id, timeout=120) for job_id in first]
    # then they all finish, on both hosts
    assert all(d["status"] == "succeeded" for d in done)
    assert {d["worker"].split("@")[0] for d in done} == {"w1", "w2"}

    # when w1's link is cut while it holds jobs
    second = [client.submit("sleep", {"seconds": 1.0, "steps": 2})["id"] for _ in range(16)]
    wait_for(
        lambda: any(
            (client.get(j)["worker"] or "").startswith("w1@") and client.get(j)["status"] == "running" for j in second
        ),
        timeout=60,
        what="w1 to be running one of the jobs",
    )
    cluster["net"].cut("w1")
    # then no job is lost: every one finishes (what w1 took comes back to w2 after the visibility timeout)
    finished = [client.wait(job_id, timeout=180) for job_id in second]
    assert [d["status"] for d in finished] == ["succeeded"] * len(second)
    assert any(d["worker"].startswith("w2@") for d in finished)

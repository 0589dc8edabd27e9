"""The embedded broker: the bundled redis-server, shared by every process, persisted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import redis

from conftest import child_env
from modelq.broker import EmbeddedRedis


def test_start_reuse_stop(tmp_path: Path) -> None:
    broker = EmbeddedRedis(tmp_path)
    try:
        assert broker.ensure_running() is True
        pid = broker.pid()
        assert broker.ensure_running() is False  # reused, not a second server
        assert broker.pid() == pid
        assert broker.url == f"redis+socket://{broker.socket}"
    finally:
        broker.stop()
    assert not broker.ping()


def test_no_tcp_port_and_private_socket(tmp_path: Path) -> None:
    broker = EmbeddedRedis(tmp_path)
    broker.ensure_running()
    try:
        client = redis.Redis(unix_socket_path=str(broker.socket))
        assert client.config_get("port")["port"] == "0"
        assert oct(broker.socket.stat().st_mode & 0o777) == "0o700"
        client.close()
    finally:
        broker.stop()


def test_processes_starting_at_once_share_one_server(tmp_path: Path) -> None:
    code = "import sys; from modelq.broker import EmbeddedRedis; print(EmbeddedRedis(sys.argv[1]).ensure_running())"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=child_env()
        )
        for _ in range(4)
    ]
    started = [proc.communicate(timeout=60)[0].strip() for proc in procs]
    try:
        assert sorted(started) == ["False", "False", "False", "True"]
        assert (
            subprocess.run(
                ["pgrep", "-fc", str(EmbeddedRedis(tmp_path).socket)], capture_output=True, text=True
            ).stdout.strip()
            == "1"
        )
    finally:
        EmbeddedRedis(tmp_path).stop()


def test_messages_survive_a_restart(tmp_path: Path) -> None:
    broker = EmbeddedRedis(tmp_path)
    broker.ensure_running()
    client = redis.Redis(unix_socket_path=str(broker.socket))
    client.lpush("default", b"job-1", b"job-2")
    client.close()
    broker.stop()
    assert (broker.dir / "appendonlydir").exists() or (broker.dir / "appendonly.aof").exists()
    broker.ensure_running()
    try:
        client = redis.Redis(unix_socket_path=str(broker.socket))
        assert client.lrange("default", 0, -1) == [b"job-2", b"job-1"]
        client.close()
    finally:
        broker.stop()


def test_a_deep_home_gets_a_short_socket_path(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    broker = EmbeddedRedis(deep)
    assert len(str(broker.socket)) <= 100
    broker.ensure_running()
    try:
        assert broker.ping()
    finally:
        broker.stop()

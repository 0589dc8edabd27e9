"""The ``modelq`` command: thin commands over the same functions the API uses."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from modelq.errors import (
    BrokerUnavailable,
    ConfigError,
    InsecureApi,
    InsecureMonitor,
    InvalidInput,
    JobTimeout,
    ModelqError,
    TaskNotFound,
    Unauthorized,
)

# Exit codes, named (a script can tell a failed job from a bad command).
RET_JOB_FAILED = 1
RET_USAGE = 2
RET_BROKER = 3
RET_TIMEOUT = 4
RET_CONFIG = 5
RET_AUTH = 6
RET_ERROR = 10

_EXIT_CODES: list[tuple[type[ModelqError], int]] = [
    (ConfigError, RET_CONFIG),
    (InsecureMonitor, RET_USAGE),
    (InsecureApi, RET_USAGE),
    (Unauthorized, RET_AUTH),
    (BrokerUnavailable, RET_BROKER),
    (JobTimeout, RET_TIMEOUT),
    (InvalidInput, RET_USAGE),
    (TaskNotFound, RET_USAGE),
]


def _fail(message: str, code: int) -> None:
    click.echo(f"modelq: error: {message}", err=True)
    sys.exit(code)


def handle_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Print a modelq error as one readable line and exit with its code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ModelqError as exc:
            code = next((c for cls, c in _EXIT_CODES if isinstance(exc, cls)), RET_ERROR)
            _fail(exc.message, code)

    return wrapper


def pass_settings(func: Callable[..., Any]) -> Callable[..., Any]:
    """Shared ``--home`` / ``--config`` options; passes the loaded settings as ``settings``."""

    @click.option("--home", type=click.Path(path_type=Path), default=None, help="MODELQ_HOME (default ./.modelq)")
    @click.option("--config", "config_file", type=click.Path(), default=None, help="YAML config file (MODELQ_CONFIG)")
    @functools.wraps(func)
    def wrapper(*args: Any, home: Path | None, config_file: str | None, **kwargs: Any) -> Any:
        from modelq.config import load_settings

        # Children (workers started by `up`) read the same environment.
        if home is not None:
            os.environ["MODELQ_HOME"] = str(home)
        if config_file is not None:
            os.environ["MODELQ_CONFIG"] = config_file
        try:
            settings = load_settings()
        except ConfigError as exc:
            _fail(exc.message, RET_CONFIG)
        return func(*args, settings=settings, **kwargs)

    return wrapper


@click.group()
@click.version_option(package_name="modelq")
def cli() -> None:
    """modelq: ML models and heavy compute behind a distributed job queue (Celery)."""


def main(argv: list[str] | None = None) -> None:
    """The ``modelq`` command. ``-P gevent`` patches the standard library first, as Celery's own CLI does."""
    from celery import maybe_patch_concurrency

    maybe_patch_concurrency(sys.argv if argv is None else ["modelq", *argv], ["-P"], ["--pool"])
    cli.main(args=argv, prog_name="modelq")


def _client(settings: Any, url: str | None):  # noqa: ANN202
    from modelq.client import Client

    return Client(url) if url else Client.in_process(settings)


def _parse_input(raw: str | None) -> dict[str, Any]:
    if raw is None:
        return {}
    text = raw
    if raw.startswith("@"):
        path = Path(raw[1:])
        if not path.is_file():
            raise InvalidInput(f"input file {str(path)!r} does not exist", field="input")
        text = path.read_text()
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"--input is not valid JSON: {exc}", field="input") from None
    if not isinstance(value, dict):
        raise InvalidInput("--input must be a JSON object", field="input")
    return value


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


def _stderr_console():  # noqa: ANN202
    from rich.console import Console

    return Console(stderr=True)


def _stdout_console():  # noqa: ANN202
    from rich.console import Console

    # Piped into grep or a file: room for whole ids and names rather than 80 folded columns.
    return Console(width=None if sys.stdout.isatty() else 200)


# The commands register themselves on ``cli`` as their modules are imported.
from modelq.cli import access, inspection, jobs, system  # noqa: E402, F401
from modelq.cli.system import worker  # noqa: E402, F401 - modelq.cli.worker, as before the split

"""``modelq inspect``: ask the running workers, and what each process holds."""

from __future__ import annotations

import sys
from typing import Any

import click

from modelq.cli import (
    RET_ERROR,
    _echo_json,
    _stdout_console,
    cli,
    handle_errors,
    pass_settings,
)


@cli.command()
@click.argument(
    "what",
    type=click.Choice(["ping", "active", "reserved", "scheduled", "registered", "stats", "active-queues", "models"]),
)
@click.option("--timeout", type=float, default=1.0, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@pass_settings
@handle_errors
def inspect(settings: Any, what: str, timeout: float, as_json: bool) -> None:
    """Ask the running workers (the same as `celery -A modelq inspect`)."""
    from modelq.broker import check_broker
    from modelq.celery_app import create_celery_app
    from modelq.inspection import table_for

    app = create_celery_app(settings)
    check_broker(app)
    if what == "models":
        _inspect_models(app, as_json)
        return
    inspector = app.control.inspect(timeout=timeout)
    replies = getattr(inspector, what.replace("-", "_"))() or {}
    if as_json:
        _echo_json(replies)
        return
    if not replies:
        click.echo("no worker answered", err=True)
        sys.exit(RET_ERROR)
    _print_table(f"{what} ({len(replies)} worker(s))", *table_for(what, replies), empty=f"no {what} jobs")


def _print_table(title: str, columns: list[str], rows: list[list[str]], *, empty: str) -> None:
    from rich.table import Table

    if not rows:
        click.echo(f"{title}: {empty}")
        return
    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row)
    _stdout_console().print(table)


def _inspect_models(app: Any, as_json: bool) -> None:
    from rich.table import Table

    from modelq.errors import format_bytes
    from modelq.models.listing import model_listing

    listing = model_listing(app)
    if as_json:
        _echo_json(listing)
        return
    table = Table(title="models per worker process")
    for column in ("model", "worker", "pid", "device", "resident", "bytes", "loads", "evictions", "hits", "load s"):
        table.add_column(column)
    for model in listing["data"]:
        if not model["workers"]:
            table.add_row(model["id"], "-", "", "", "no", "", "0", "0", "0", "")
        for w in model["workers"]:
            table.add_row(
                model["id"],
                w["worker"],
                str(w["pid"]),
                w["device"],
                "yes" if w["resident"] else "no",
                format_bytes(w["bytes"]),
                str(w["loads"]),
                str(w["evictions"]),
                str(w["hits"]),
                f"{w['load_seconds']:.2f}",
            )
    _stdout_console().print(table)

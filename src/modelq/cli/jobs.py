"""``modelq submit``, ``get``, ``cancel``, ``jobs``, ``status`` and ``purge``: jobs and queues."""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from modelq.cli import (
    RET_JOB_FAILED,
    _client,
    _echo_json,
    _parse_input,
    _stderr_console,
    _stdout_console,
    cli,
    handle_errors,
    pass_settings,
)
from modelq.config import safe_url
from modelq.errors import ConfigError, JobTimeout
from modelq.jobs.status import is_finished


@cli.command()
@click.argument("task")
@click.option("-i", "--input", "raw_input", default=None, help="JSON object, or @file.json")
@click.option(
    "--priority",
    default=None,
    metavar="0-9|interactive|batch",
    help="0 (lowest) to 9 (highest), or 'interactive' (goes ahead of batch jobs) or 'batch'",
)
@click.option("--idempotency-key", default=None)
@click.option("--wait", is_flag=True, help="wait for the result, with a progress bar")
@click.option("--timeout", type=float, default=None, help="with --wait: give up after this many seconds")
@click.option("--url", default=None, help="submit through this API instead of directly to the broker")
@pass_settings
@handle_errors
def submit(
    settings: Any,
    task: str,
    raw_input: str | None,
    priority: str | None,
    idempotency_key: str | None,
    wait: bool,
    timeout: float | None,
    url: str | None,
) -> None:
    """Submit a job: modelq submit echo --input '{"x": 1}' --wait"""
    from modelq.jobs.dispatch import priority_value

    data = _parse_input(raw_input)  # a typo fails here, before any broker is started
    level = priority_value(priority)
    client = _client(settings, url)
    job = client.submit(task, data, priority=level, idempotency_key=idempotency_key)
    if not wait:
        _echo_json({"id": job["id"], "status": job["status"], "queue": job["queue"]})
        return
    job = _wait_with_progress(client, job["id"], timeout)
    _echo_json(
        job["result"]
        if job["status"] == "succeeded"
        else {"id": job["id"], "status": job["status"], "error": job["error"]}
    )
    if job["status"] != "succeeded":
        sys.exit(RET_JOB_FAILED)


def _wait_with_progress(client: Any, job_id: str, timeout: float | None) -> dict[str, Any]:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    deadline = None if timeout is None else time.monotonic() + timeout
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=_stderr_console(),
        transient=True,
    ) as bar:
        handle = bar.add_task("queued", total=1.0)
        while True:
            job = client.get(job_id)
            message = job["progress"]["message"] or job["status"]
            if job["status"] == "queued" and job.get("queue_position"):
                message = f"queued (position {job['queue_position']})"
            bar.update(handle, completed=job["progress"]["fraction"], description=message)
            if is_finished(job["status"]):
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise JobTimeout(job_id, timeout or 0)
            try:
                return client.wait(job_id, timeout=0.25)
            except JobTimeout:
                continue


@cli.command()
@click.argument("job_id")
@click.option("--url", default=None, help="ask this API instead of the job store")
@pass_settings
@handle_errors
def get(settings: Any, job_id: str, url: str | None) -> None:
    """Show one job's record."""
    _echo_json(_client(settings, url).get(job_id))


@cli.command()
@click.argument("job_id")
@click.option("--url", default=None)
@pass_settings
@handle_errors
def cancel(settings: Any, job_id: str, url: str | None) -> None:
    """Cancel a job."""
    job = _client(settings, url).cancel(job_id)
    _echo_json({"id": job["id"], "status": job["status"]})


@cli.command()
@click.option("--status", default=None, help="queued, running, succeeded, failed or cancelled")
@click.option("--task", default=None)
@click.option("--limit", type=int, default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@pass_settings
@handle_errors
def jobs(settings: Any, status: str | None, task: str | None, limit: int, as_json: bool) -> None:
    """List recent jobs."""
    page = _client(settings, None).list(status=status, task=task, limit=limit)
    if as_json:
        _echo_json(page)
        return
    from rich.table import Table

    table = Table(title=f"jobs ({page['total']} in all)")
    for column in ("id", "task", "status", "progress", "queue", "attempts", "created"):
        table.add_column(column)
    for job in page["jobs"]:
        table.add_row(
            job["id"],
            job["task"],
            job["status"],
            f"{job['progress']['fraction']:.0%}",
            job["queue"],
            str(job["attempts"]),
            (job["created_at"] or "")[:19],
        )
    _stdout_console().print(table)


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@pass_settings
@handle_errors
def status(settings: Any, as_json: bool) -> None:
    """Every queue with jobs (per-model queues too) and who reads it, job counts, the workers that answer."""
    from modelq.celery_app import create_celery_app
    from modelq.jobs.service import JobService
    from modelq.ops import queue_rows, readers_of

    app = create_celery_app(settings)
    service = JobService(app)
    try:
        active = app.control.inspect(timeout=1.0).active_queues() or {}
    except Exception:  # an unreachable broker means no worker either
        active = {}
    rows = queue_rows(app, readers_of(settings, active))
    report = {
        "broker": safe_url(app.conf.broker_url),
        "queues": {row["name"]: row["depth"] for row in rows},  # messages on the broker
        "queue_details": [
            {
                "queue": row["name"],
                "messages": row["depth"],
                "waiting": row["queued_jobs"],
                "readers": row["consumers"],
                "stranded": row["stranded"],
            }
            for row in rows
        ],
        "jobs": service.store.counts(),
        "workers": sorted(active) or service.workers(timeout=1.0),
    }
    if as_json:
        _echo_json(report)
        return
    click.echo(f"broker: {report['broker']}")
    click.echo("queues:")
    for row in report["queue_details"]:
        messages = "?" if row["messages"] is None else row["messages"]
        line = f"  {row['queue']}: {row['waiting']} waiting, {messages} on the broker, read by "
        line += ", ".join(row["readers"]) or "no worker"
        if row["stranded"]:
            line += f"  [{row['stranded']} stranded: nobody serves them]"
        click.echo(line)
    click.echo("jobs: " + (", ".join(f"{s}={n}" for s, n in sorted(report["jobs"].items())) or "none"))
    click.echo("workers: " + (", ".join(report["workers"]) or "none answered"))


@cli.command()
@click.option("-Q", "--queue", "queue_name", required=True, help="queue to empty")
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
@pass_settings
@handle_errors
def purge(settings: Any, queue_name: str, yes: bool) -> None:
    """Remove every waiting message from a queue (their jobs are marked cancelled)."""
    from modelq.celery_app import create_celery_app
    from modelq.ops import purge_queue

    if queue_name not in settings.queues:
        raise ConfigError("queue", f"unknown queue {queue_name!r}; configured: {', '.join(settings.queues)}")
    if not yes:
        click.confirm(f"Remove every waiting job from queue {queue_name!r}?", abort=True)
    removed, cancelled = purge_queue(create_celery_app(settings), queue_name)
    click.echo(f"purged {removed} message(s) from {queue_name!r}; {cancelled} queued job(s) marked cancelled")

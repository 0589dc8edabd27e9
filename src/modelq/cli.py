"""The ``modelq`` command: thin commands over the same functions the API uses."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from modelq.config import safe_url
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
from modelq.jobs.status import is_finished

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


# Run the system ------------------------------------------------------------------------


def _worker_groups(settings: Any, queues: list[str]) -> dict[str, list[str]]:
    """Queues grouped by pool settings: one worker process serves each group."""
    groups: dict[tuple, list[str]] = {}
    for name in queues:
        cfg = settings.queues[name]
        groups.setdefault((cfg.pool, cfg.concurrency, cfg.prefetch_multiplier), []).append(name)
    return {key[0] + ("" if i == 0 else f"-{i}"): names for i, (key, names) in enumerate(groups.items())}


class _Shutdown(Exception):
    pass


def _raise_shutdown(signum: int, frame: Any) -> None:
    raise _Shutdown()


@cli.command()
@click.option("--host", default=None, help="API host (default MODELQ_API_HOST, 127.0.0.1)")
@click.option("--port", type=int, default=None, help="API port (default MODELQ_API_PORT, 8000)")
@click.option("-Q", "--queues", default=None, help="queues to run workers for (default: all configured)")
@click.option("-c", "--concurrency", type=int, default=None, help="processes of the CPU (prefork) worker")
@click.option("--loglevel", default="WARNING", show_default=True)
@pass_settings
@handle_errors
def up(settings: Any, host: str | None, port: int | None, queues: str | None, concurrency: int | None, loglevel: str) -> None:
    """Everything on one machine: the embedded broker, workers and the API."""
    import uvicorn

    from modelq.access import KeyRing, check_api_address
    from modelq.api import create_api, server_config
    from modelq.broker import EmbeddedRedis
    from modelq.celery_app import create_celery_app

    host = host or settings.api_host
    access = check_api_address(host, KeyRing(settings.api_keys))  # before anything starts
    started_broker = False
    embedded = EmbeddedRedis(settings.home_dir) if settings.uses_embedded_broker else None
    if embedded is not None:
        started_broker = embedded.ensure_running()
    queue_names = queues.split(",") if queues else list(settings.queues)
    unknown = [q for q in queue_names if q not in settings.queues]
    if unknown:
        raise ConfigError("queues", f"unknown queue(s) {', '.join(unknown)}; configured: {', '.join(settings.queues)}")
    from modelq.gpus import visible_gpus
    from modelq.processes import die_with_parent

    workers: list[subprocess.Popen] = []
    gpus = visible_gpus() if "gpu" in queue_names else []
    for group in _worker_groups(settings, queue_names).values():
        pool = settings.queues[group[0]].pool
        # The gpu queue's worker on a host with GPUs: one process per GPU, named gpuN@host.
        where = ["--gpus", ",".join(gpus)] if gpus and "gpu" in group else ["--hostname", f"{group[0]}@%h"]
        argv = [sys.executable, "-m", "modelq", "worker", "-Q", ",".join(group), "--pool", pool, *where,
                "--loglevel", loglevel]  # fmt: skip
        if concurrency and pool == "prefork":
            argv += ["-c", str(concurrency)]
        workers.append(subprocess.Popen(argv, start_new_session=True, preexec_fn=die_with_parent))
    app = create_celery_app(settings)
    api = create_api(settings, celery_app=app)
    port = port if port is not None else settings.api_port
    server = uvicorn.Server(server_config(api, host=host, port=port))
    click.echo(f"modelq is up: http://{host}:{port}  (docs: http://{host}:{port}/docs)")
    click.echo(f"  broker: {safe_url(app.conf.broker_url)}{' (embedded)' if embedded else ''}")
    click.echo(f"  job store: {safe_url(settings.job_database_url)}")
    click.echo(f"  {access}")
    groups = _worker_groups(settings, queue_names)
    click.echo("  workers: " + "; ".join(f"{settings.queues[g[0]].pool} pool for {', '.join(g)}" for g in groups.values()))
    click.echo("Press Ctrl-C to stop.")
    # uvicorn re-raises the signal that stopped it; turn both into a clean shutdown.
    signal.signal(signal.SIGTERM, _raise_shutdown)
    try:
        server.run()
    except (KeyboardInterrupt, _Shutdown):
        pass
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # warm shutdown: running jobs finish
        for proc in workers:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        if started_broker and embedded is not None:
            embedded.stop()
        click.echo("modelq stopped.")


@cli.command()
@click.option("-Q", "--queues", default="default", show_default=True, help="comma-separated queues to consume")
@click.option("-P", "--pool", type=click.Choice(["prefork", "solo", "threads", "gevent"]), default=None,
              help="pool (default: the first queue's configured pool)")  # fmt: skip
@click.option("-c", "--concurrency", type=int, default=None, help="processes or threads")
@click.option("-n", "--hostname", default=None, help="worker name, e.g. gpu@%h")
@click.option("--max-tasks-per-child", type=int, default=None, help="recycle a process after N jobs")
@click.option("--models", default=None, help="serve only these models (comma-separated): a dedicated worker")
@click.option("--gpus", default=None, help="one worker process per GPU: 'all' or indices such as 0,2 (named gpuN@host)")
@click.option("-l", "--loglevel", default="INFO", show_default=True)
@pass_settings
@handle_errors
def worker(settings: Any, queues: str, pool: str | None, concurrency: int | None, hostname: str | None,
           max_tasks_per_child: int | None, models: str | None, gpus: str | None, loglevel: str) -> None:  # fmt: skip
    """Run a worker for some queues (starts the embedded broker when it is the one configured)."""
    from modelq.celery_app import create_celery_app
    from modelq.worker import run_worker

    if gpus is not None:
        from modelq.gpus import parse_gpus, run_per_gpu

        args = ["-Q", queues, "--loglevel", loglevel]
        for flag, value in (("--pool", pool), ("-c", concurrency), ("--max-tasks-per-child", max_tasks_per_child),
                            ("--models", models)):  # fmt: skip
            if value is not None:
                args += [flag, str(value)]
        sys.exit(run_per_gpu(parse_gpus(gpus), args, hostname))

    if models is not None:
        settings = settings.model_copy(update={"worker_models": [m.strip() for m in models.split(",") if m.strip()]})

    app = create_celery_app(settings, start_broker=True)
    app.modelq.store  # noqa: B018 - migrate before the first job arrives
    run_worker(app, queues=queues.split(","), pool=pool, concurrency=concurrency, hostname=hostname,
               loglevel=loglevel, max_tasks_per_child=max_tasks_per_child)  # fmt: skip


@cli.command()
@click.option("--host", default=None, help="default MODELQ_API_HOST (127.0.0.1)")
@click.option("--port", type=int, default=None, help="default MODELQ_API_PORT (8000)")
@pass_settings
@handle_errors
def api(settings: Any, host: str | None, port: int | None) -> None:
    """Run the HTTP API (OpenAPI docs at /docs)."""
    import uvicorn

    from modelq.access import KeyRing, check_api_address
    from modelq.api import create_api, server_config

    host = host or settings.api_host
    click.echo(f"modelq api: {check_api_address(host, KeyRing(settings.api_keys))}")
    uvicorn.Server(server_config(create_api(settings), host=host, port=port or settings.api_port, log_level="info")).run()


# Access --------------------------------------------------------------------------------


@cli.group()
def keys() -> None:
    """API keys: each has an owner, who alone sees its jobs; the configuration keeps only hashes."""


@keys.command("new")
@click.argument("owner")
@click.option("--json", "as_json", is_flag=True, help="print {owner, key, hash} as one JSON object")
@handle_errors
def keys_new(owner: str, as_json: bool) -> None:
    """Make a key for OWNER: prints the key (shown once, stored nowhere) and the hash to configure."""
    from modelq.access import OWNER_PATTERN, hash_key, new_key

    if not OWNER_PATTERN.match(owner):
        raise InvalidInput(f"owner {owner!r} must be 1-200 letters, digits, '.', '_', '@' or '-'", field="owner")
    key = new_key()
    digest = hash_key(key)
    if as_json:
        _echo_json({"owner": owner, "key": key, "hash": digest})
        return
    click.echo(f"key for {owner} (give it to them; it is shown only now): {key}")
    click.echo("configure its hash, in modelq.yml:")
    click.echo(f"  api_keys:\n    {owner}: [\"{digest}\"]")
    click.echo(f"or in the environment: MODELQ_API_KEYS='{json.dumps({owner: [digest]})}'")


@keys.command("hash")
@handle_errors
def keys_hash() -> None:
    """Print the hash of a key read from standard input (to configure a key you already hold)."""
    from modelq.access import hash_key

    key = sys.stdin.readline().strip()
    if not key:
        raise InvalidInput("no key on standard input: echo \"$KEY\" | modelq keys hash", field="key")
    click.echo(hash_key(key))


@keys.command("list")
@pass_settings
@handle_errors
def keys_list(settings: Any) -> None:
    """The owners that have keys in the configuration in force, and how many each."""
    if not settings.api_keys:
        click.echo("no API keys configured: the API listens on loopback only")
    for owner, digests in sorted(settings.api_keys.items()):
        click.echo(f"{owner}\t{len(digests)} key(s)")


# Jobs ----------------------------------------------------------------------------------


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


@cli.command()
@click.argument("task")
@click.option("-i", "--input", "raw_input", default=None, help="JSON object, or @file.json")
@click.option("--priority", default=None, metavar="0-9|interactive|batch",
              help="0 (lowest) to 9 (highest), or 'interactive' (goes ahead of batch jobs) or 'batch'")
@click.option("--idempotency-key", default=None)
@click.option("--wait", is_flag=True, help="wait for the result, with a progress bar")
@click.option("--timeout", type=float, default=None, help="with --wait: give up after this many seconds")
@click.option("--url", default=None, help="submit through this API instead of directly to the broker")
@pass_settings
@handle_errors
def submit(settings: Any, task: str, raw_input: str | None, priority: str | None, idempotency_key: str | None,
           wait: bool, timeout: float | None, url: str | None) -> None:  # fmt: skip
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
    _echo_json(job["result"] if job["status"] == "succeeded" else {"id": job["id"], "status": job["status"], "error": job["error"]})
    if job["status"] != "succeeded":
        sys.exit(RET_JOB_FAILED)


def _wait_with_progress(client: Any, job_id: str, timeout: float | None) -> dict[str, Any]:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    deadline = None if timeout is None else time.monotonic() + timeout
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TimeElapsedColumn(), console=_stderr_console(), transient=True) as bar:  # fmt: skip
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


def _stderr_console():  # noqa: ANN202
    from rich.console import Console

    return Console(stderr=True)


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
        table.add_row(job["id"], job["task"], job["status"], f"{job['progress']['fraction']:.0%}", job["queue"],
                      str(job["attempts"]), (job["created_at"] or "")[:19])  # fmt: skip
    _stdout_console().print(table)


def _stdout_console():  # noqa: ANN202
    from rich.console import Console

    # Piped into grep or a file: room for whole ids and names rather than 80 folded columns.
    return Console(width=None if sys.stdout.isatty() else 200)


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
        "queue_details": [{"queue": row["name"], "messages": row["depth"], "waiting": row["queued_jobs"],
                           "readers": row["consumers"], "stranded": row["stranded"]} for row in rows],  # fmt: skip
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


@cli.command()
@click.argument("what", type=click.Choice(["ping", "active", "reserved", "scheduled", "registered", "stats", "active-queues",
                                           "models"]))
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

    from modelq.api.models import model_listing
    from modelq.errors import format_bytes

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
            table.add_row(model["id"], w["worker"], str(w["pid"]), w["device"], "yes" if w["resident"] else "no",
                          format_bytes(w["bytes"]), str(w["loads"]), str(w["evictions"]), str(w["hits"]),
                          f"{w['load_seconds']:.2f}")  # fmt: skip
    _stdout_console().print(table)


@cli.command(context_settings={"ignore_unknown_options": True})
@click.option("--address", default="127.0.0.1", show_default=True, help="address Flower listens on")
@click.option("--port", type=int, default=5555, show_default=True)
@click.option("--basic-auth", "basic_auth", multiple=True, metavar="USER:PASSWORD",
              help="a login (repeatable); FLOWER_BASIC_AUTH works too")  # fmt: skip
@click.option("--insecure", is_flag=True, help="serve without a login (loopback addresses only)")
@click.argument("flower_args", nargs=-1, type=click.UNPROCESSED)
@pass_settings
@handle_errors
def monitor(settings: Any, address: str, port: int, basic_auth: tuple[str, ...], insecure: bool,
            flower_args: tuple[str, ...]) -> None:  # fmt: skip
    """Run Flower for this app (needs a login unless --insecure on loopback); Flower's own options go after --."""
    from modelq.celery_app import create_celery_app
    from modelq.monitor import flower_argv

    argv = flower_argv(address=address, port=port, basic_auth=list(basic_auth), insecure=insecure,
                       extra=list(flower_args))  # fmt: skip
    app = create_celery_app(settings, start_broker=True)
    # Workers send task events only when asked (MODELQ_TASK_EVENTS): ask now, so the jobs that start
    # before Flower's own first request (after 5 s, and every 5 s) show too.
    app.control.enable_events()
    click.echo(f"Flower for modelq: http://{address}:{port}" + ("" if basic_auth else " (no login)"), err=True)
    sys.exit(app.start(argv) or 0)


@cli.command()
@click.argument("scenario")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@click.option("--out", type=click.Path(path_type=Path), default=Path("bench-results"), show_default=True,
              help="folder for the PNG chart")  # fmt: skip
@click.option("--quick", is_flag=True, help="fewer iterations (a smoke run)")
@pass_settings
@handle_errors
def bench(settings: Any, scenario: str, as_json: bool, out: Path, quick: bool) -> None:
    """Run a benchmark scenario beside its baseline: queue (P1), warm (P2), embed (P3), switch (P4),
    llm (P5), timetable (P6), up (P7), itc (T1), cluster (C1), chaos (R1), fairness (F1)."""
    from modelq.bench import run_scenario

    run_scenario(scenario, settings=settings, as_json=as_json, out=out, quick=quick)


if __name__ == "__main__":
    main()

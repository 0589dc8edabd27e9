"""``modelq up``, ``worker``, ``api``, ``monitor`` and ``bench``: run the system, watch it, measure it."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import click

from modelq.cli import (
    cli,
    handle_errors,
    pass_settings,
)
from modelq.config import safe_url
from modelq.errors import ConfigError


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
def up(
    settings: Any, host: str | None, port: int | None, queues: str | None, concurrency: int | None, loglevel: str
) -> None:
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
        argv = [
            sys.executable,
            "-m",
            "modelq",
            "worker",
            "-Q",
            ",".join(group),
            "--pool",
            pool,
            *where,
            "--loglevel",
            loglevel,
        ]
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
    click.echo(
        "  workers: " + "; ".join(f"{settings.queues[g[0]].pool} pool for {', '.join(g)}" for g in groups.values())
    )
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
@click.option(
    "-P",
    "--pool",
    type=click.Choice(["prefork", "solo", "threads", "gevent"]),
    default=None,
    help="pool (default: the first queue's configured pool)",
)
@click.option("-c", "--concurrency", type=int, default=None, help="processes or threads")
@click.option("-n", "--hostname", default=None, help="worker name, e.g. gpu@%h")
@click.option("--max-tasks-per-child", type=int, default=None, help="recycle a process after N jobs")
@click.option("--models", default=None, help="serve only these models (comma-separated): a dedicated worker")
@click.option("--gpus", default=None, help="one worker process per GPU: 'all' or indices such as 0,2 (named gpuN@host)")
@click.option("-l", "--loglevel", default="INFO", show_default=True)
@pass_settings
@handle_errors
def worker(
    settings: Any,
    queues: str,
    pool: str | None,
    concurrency: int | None,
    hostname: str | None,
    max_tasks_per_child: int | None,
    models: str | None,
    gpus: str | None,
    loglevel: str,
) -> None:
    """Run a worker for some queues (starts the embedded broker when it is the one configured)."""
    from modelq.celery_app import create_celery_app
    from modelq.worker import run_worker

    if gpus is not None:
        from modelq.gpus import parse_gpus, run_per_gpu

        args = ["-Q", queues, "--loglevel", loglevel]
        for flag, value in (
            ("--pool", pool),
            ("-c", concurrency),
            ("--max-tasks-per-child", max_tasks_per_child),
            ("--models", models),
        ):
            if value is not None:
                args += [flag, str(value)]
        sys.exit(run_per_gpu(parse_gpus(gpus), args, hostname))

    if models is not None:
        settings = settings.model_copy(update={"worker_models": [m.strip() for m in models.split(",") if m.strip()]})

    app = create_celery_app(settings, start_broker=True)
    app.modelq.store  # noqa: B018 - migrate before the first job arrives
    run_worker(
        app,
        queues=queues.split(","),
        pool=pool,
        concurrency=concurrency,
        hostname=hostname,
        loglevel=loglevel,
        max_tasks_per_child=max_tasks_per_child,
    )


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
    uvicorn.Server(
        server_config(create_api(settings), host=host, port=port or settings.api_port, log_level="info")
    ).run()


@cli.command(context_settings={"ignore_unknown_options": True})
@click.option("--address", default="127.0.0.1", show_default=True, help="address Flower listens on")
@click.option("--port", type=int, default=5555, show_default=True)
@click.option(
    "--basic-auth",
    "basic_auth",
    multiple=True,
    metavar="USER:PASSWORD",
    help="a login (repeatable); FLOWER_BASIC_AUTH works too",
)
@click.option("--insecure", is_flag=True, help="serve without a login (loopback addresses only)")
@click.argument("flower_args", nargs=-1, type=click.UNPROCESSED)
@pass_settings
@handle_errors
def monitor(
    settings: Any, address: str, port: int, basic_auth: tuple[str, ...], insecure: bool, flower_args: tuple[str, ...]
) -> None:
    """Run Flower for this app (needs a login unless --insecure on loopback); Flower's own options go after --."""
    from modelq.celery_app import create_celery_app
    from modelq.monitor import flower_argv

    argv = flower_argv(
        address=address, port=port, basic_auth=list(basic_auth), insecure=insecure, extra=list(flower_args)
    )
    app = create_celery_app(settings, start_broker=True)
    # Workers send task events only when asked (MODELQ_TASK_EVENTS): ask now, so the jobs that start
    # before Flower's own first request (after 5 s, and every 5 s) show too.
    app.control.enable_events()
    click.echo(f"Flower for modelq: http://{address}:{port}" + ("" if basic_auth else " (no login)"), err=True)
    sys.exit(app.start(argv) or 0)


@cli.command()
@click.argument("scenario")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("bench-results"),
    show_default=True,
    help="folder for the PNG chart",
)
@click.option("--quick", is_flag=True, help="fewer iterations (a smoke run)")
@pass_settings
@handle_errors
def bench(settings: Any, scenario: str, as_json: bool, out: Path, quick: bool) -> None:
    """Run a benchmark scenario beside its baseline: queue, warm, embed, switch, llm, timetable, up,
    itc, cluster, chaos, fairness (docs/benchmarks.md says what each measures)."""
    from modelq.bench import run_scenario

    run_scenario(scenario, settings=settings, as_json=as_json, out=out, quick=quick)

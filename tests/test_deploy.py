"""The deployment files: docker-compose.yml has the cluster the documentation describes, and validates."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_has_the_cluster_roles() -> None:
    services = _compose()["services"]
    assert {"redis", "rabbitmq", "postgres", "api", "worker-gpu", "worker-io", "worker-cpu", "flower"} <= set(services)
    assert services["rabbitmq"]["profiles"] == ["rabbitmq"]
    # the GPU worker never forks after CUDA: solo pool
    gpu = services["worker-gpu"]["command"]
    assert gpu[gpu.index("--pool") + 1] == "solo" and gpu[gpu.index("-Q") + 1] == "gpu"
    assert services["worker-io"]["command"][services["worker-io"]["command"].index("--pool") + 1] == "threads"
    # Flower only with a login
    flower = services["flower"]["command"]
    assert flower[:2] == ["modelq", "monitor"] and any(arg == "--basic-auth" for arg in flower)
    # the API listens beyond loopback, so it needs keys
    assert "MODELQ_API_KEYS" in services["api"]["environment"]
    # every modelq role shares the broker, the result backend and the database
    for name in ("api", "worker-gpu", "worker-io", "worker-cpu", "flower"):
        env = services[name]["environment"]
        assert {"MODELQ_BROKER_URL", "MODELQ_RESULT_BACKEND", "MODELQ_DATABASE_URL"} <= set(env)


def test_worker_commands_in_the_deployment_files_parse() -> None:
    """Every `modelq worker` line in compose and systemd is accepted by the real CLI's parser."""
    from modelq.cli import worker

    lines = [
        s["command"] for s in _compose()["services"].values() if s.get("command", [None])[:2] == ["modelq", "worker"]
    ]
    unit = (ROOT / "deploy/systemd/modelq-worker@.service").read_text()
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    lines.append(["modelq", *exec_start.split("=", 1)[1].replace("%i", "cpu").replace("%%", "%").split()[1:]])
    assert len(lines) == 4
    for argv in lines:
        ctx = worker.make_context("worker", list(argv[2:]))  # raises on an unknown option or a bad value
        assert ctx.params["queues"] and ctx.params["hostname"].endswith("@%h")


def _compose_command() -> list[str] | None:
    """`docker compose` (the plugin), else Debian's `docker-compose`, else None."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return ["docker-compose"] if shutil.which("docker-compose") else None


def test_docker_compose_config_validates() -> None:
    command = _compose_command()
    if command is None:
        pytest.skip("neither the docker compose plugin nor docker-compose is installed")
    result = subprocess.run(
        [*command, "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={
            "PATH": "/usr/bin:/bin:/usr/local/bin",
            "FLOWER_USER": "ops",
            "FLOWER_PASSWORD": "x",
            "MODELQ_API_KEYS": "{}",
        },
    )
    assert result.returncode == 0, result.stderr


def test_the_installed_packages_are_the_locked_ones() -> None:
    """scripts/setup installs requirements.lock exactly; a drifted install or lock shows here."""
    from importlib.metadata import PackageNotFoundError, version

    locked = [
        line.split("==", 1)
        for line in (ROOT / "requirements.lock").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert any(name == "celery" for name, _ in locked) and any(name == "torch" for name, _ in locked)
    drift = []
    for name, want in locked:
        try:
            have = version(name)
        except PackageNotFoundError:
            have = None
        if have != want:
            drift.append(f"{name}: locked {want}, installed {have}")
    assert not drift, "run ./scripts/setup dev (or ./scripts/lock after changing pyproject.toml): " + "; ".join(drift)

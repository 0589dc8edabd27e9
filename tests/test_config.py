"""Settings from the environment, a YAML file and .env; invalid values name the bad key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import child_env
from modelq.config import load_settings
from modelq.errors import ConfigError


def test_defaults(tmp_path: Path) -> None:
    settings = load_settings()
    assert settings.home_dir == (tmp_path / ".modelq").resolve()
    assert set(settings.queues) == {"default", "cpu", "gpu", "io"}
    assert settings.queues["gpu"].pool == "threads"  # never forks: CUDA-safe, and batches
    assert settings.job_database_url.startswith("sqlite:///")
    assert settings.uses_embedded_broker


def test_environment_yaml_and_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "modelq.yml").write_text(
        "api_port: 9001\nroutes:\n  'tests.*': cpu\nqueues:\n  default: {pool: prefork}\n  cpu: {pool: prefork, concurrency: 3}\n"
    )
    (tmp_path / ".env").write_text("MODELQ_MAX_REQUEST_BYTES=5000\n")
    monkeypatch.setenv("MODELQ_IMPORTS", "mod_a, mod_b")
    settings = load_settings()
    assert settings.api_port == 9001
    assert settings.queues["cpu"].concurrency == 3
    assert settings.max_request_bytes == 5000
    assert settings.imports == ["mod_a", "mod_b"]
    assert settings.queue_for("tests.anything", "default") == "cpu"
    assert settings.queue_for("echo", None) == "default"
    # the environment wins over the file
    monkeypatch.setenv("MODELQ_API_PORT", "9002")
    assert load_settings().api_port == 9002


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"MODELQ_API_PORT": "eighty"}, "MODELQ_API_PORT"),
        ({"MODELQ_SERIALIZER": "pickle"}, "MODELQ_SERIALIZER"),
        ({"MODELQ_FALLBACK": "sometimes"}, "MODELQ_FALLBACK"),
        ({"MODELQ_CONFIG": "/no/such/file.yml"}, "MODELQ_CONFIG"),
    ],
)
def test_invalid_values_name_the_key(monkeypatch: pytest.MonkeyPatch, env: dict, key: str) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.key == key
    assert key in str(info.value)


def test_a_route_to_an_unknown_queue_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "cfg.yml").write_text("routes:\n  'x.*': imaging\n")
    monkeypatch.setenv("MODELQ_CONFIG", str(tmp_path / "cfg.yml"))
    with pytest.raises(ConfigError, match="MODELQ_ROUTES: .*imaging"):
        load_settings()


def test_cli_reports_bad_config_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "modelq", "status"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=child_env(MODELQ_API_PORT="eighty"),
        timeout=60,
    )
    assert result.returncode == 5
    assert result.stderr.strip().splitlines() == [
        "modelq: error: invalid configuration: MODELQ_API_PORT: Input should be a valid integer, unable to parse string as an integer"
    ]


def test_importing_modelq_stays_light() -> None:
    code = "import sys, modelq; heavy = [m for m in ('torch', 'fastapi', 'celery', 'sqlalchemy') if m in sys.modules]; print(heavy)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=child_env(), timeout=60)
    assert result.stdout.strip() == "[]", result.stderr


def test_workers_reconnect_to_the_broker_for_as_long_as_they_run(tmp_path: Path) -> None:
    from modelq.celery_app import create_celery_app

    app = create_celery_app(load_settings(home=tmp_path / "home"))
    # Celery's default gives up after 100 tries (about 45 minutes of outage); None retries forever.
    assert app.conf.broker_connection_max_retries is None
    assert app.conf.broker_connection_retry_on_startup is True


def test_a_workloads_settings_are_a_group_that_keeps_its_flat_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "modelq.yml").write_text("llm_timeout: 11\nllm_max_retries: 1\nimage:\n  max_steps: 12\n")
    (tmp_path / ".env").write_text("MODELQ_IMAGE_MAX_SIDE=640\n")
    monkeypatch.setenv("MODELQ_LLM_ENDPOINTS", '{"local": {"base_url": "http://127.0.0.1:8001/v1"}}')
    monkeypatch.setenv("MODELQ_LLM_MAX_RETRIES", "2")
    settings = load_settings(embed_max_texts=5)
    assert settings.llm.timeout == 11 and settings.image.max_steps == 12  # flat and nested in the file
    assert settings.llm.endpoints["local"].base_url == "http://127.0.0.1:8001/v1"
    assert settings.image.max_side == 640 and settings.embed.max_texts == 5
    assert settings.image.max_count == 8  # a group's other settings keep their defaults
    # each source keeps its rank: keyword arguments over the environment over the file
    assert settings.llm.max_retries == 2
    assert load_settings(llm_max_retries=0).llm.max_retries == 0
    with pytest.raises(ConfigError) as bad:
        load_settings(llm={"timeout": -1})
    assert bad.value.key == "MODELQ_LLM_TIMEOUT"
    with pytest.raises(ConfigError) as unknown:
        load_settings(llm_timout=3)
    assert unknown.value.key == "MODELQ_LLM_TIMOUT"

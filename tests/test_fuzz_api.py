"""Schemathesis against the API's own OpenAPI schema: no 5xx, and every answer is one the schema declares.

Each operation of the schema is one test (``test_...[POST /v1/jobs][embedded]``): the examples
and coverage phases (boundary values, missing and wrong-typed fields, other content types,
unexpected methods), then a fuzzing phase of valid and invalid requests. The API runs in-process
(schemathesis drives the ASGI app, lifespan included) over the embedded broker and a real
``gpu`` worker, so the endpoints that wait for a job (embeddings, rerank, images, ``/generate``,
document search) give real answers: the worker holds the bundled MiniLM and a tiny random-weight
Stable Diffusion pipeline, with caps small enough that any image a request can ask for is made
in a moment. Nothing consumes the ``default`` and ``cpu`` queues: jobs sent there wait, which
is all their endpoints answer about.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from conftest import start_worker, stop_process, wait_for_worker
from text2img_helpers import TINY_MODEL, make_tiny_sd

#: Examples per operation and generation mode in the fuzzing phase (the coverage phase adds its own).
MAX_EXAMPLES = 30
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
#: The tiny pipeline as the default model, and caps it makes any allowed image under: 64 px a side,
#: the default 30 steps, two images. A request that waits gives up after a minute (504, a failure here).
CAPS = {
    "image_default_model": TINY_MODEL,
    "image_max_side": 64,
    "image_max_steps": 30,
    "image_max_count": 2,
    "image_sync_timeout": 60.0,
    "max_pdf_bytes": 64 * 1024,
    "max_pdf_pages": 2,
}


def _schemathesis_config() -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "generation": {"mode": "all", "deterministic": True},
            # A request that waits for a job is answered within image_sync_timeout; anything slower is a hang.
            "request-timeout": 90,
            "operations": [
                # The event streams never end on their own: keep what arrives in three seconds (two
                # events at most) and check its status, its content type and each event.
                {"include-path-regex": "/events$", "request-timeout": 3, "max-stream-events": 2},
            ],
        }
    )


def _static_schema() -> schemathesis.BaseSchema:
    """The schema the tests are made from, built without a broker: it depends on the routes only.

    Default settings, read from nothing (no environment, no modelq.yml), as the API under test has them.
    """
    from modelq.api import create_api
    from modelq.config import Settings

    return schemathesis.openapi.from_dict(
        create_api(Settings.model_construct()).openapi(), config=_schemathesis_config()
    )


schema = _static_schema()
# Over the embedded broker; the parameter also gives each operation its own node id (pytest 9.2
# builds node ids from the function's name and its parameters, not from schemathesis's item names).
pytestmark = pytest.mark.parametrize("api", ["embedded"], indirect=True)


@pytest.fixture(scope="module")
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """The API under test, with a gpu worker; schemathesis starts its lifespan on the first request."""
    from schemathesis.python import asgi

    from modelq.api import create_api
    from modelq.broker import EmbeddedRedis
    from modelq.celery_app import create_celery_app
    from modelq.config import load_settings

    assert request.param == "embedded"
    root = tmp_path_factory.mktemp("fuzz")
    home = root / "home"
    models = {
        TINY_MODEL: {
            "loader": "diffusers",
            "source": str(root / TINY_MODEL),
            "device": "cpu",
            "options": {"pipeline": "StableDiffusionPipeline"},
        }
    }
    env = {
        "MODELQ_HOME": str(home),
        "MODELQ_MODELS": json.dumps(models),
        "HF_HUB_OFFLINE": "1",
        **{f"MODELQ_{key.upper()}": str(value) for key, value in CAPS.items()},
    }
    # Schemathesis calls the ASGI app as host "testserver": a name the trusted-host rule must be told of.
    settings_ = load_settings(
        home=home, models=models, imports=["modelq_test_tasks"], allowed_hosts=["testserver"], **CAPS
    )
    app = create_celery_app(settings_, start_broker=True)
    app.modelq.store  # noqa: B018 - migrate before the worker starts
    worker = start_worker(env, "gpu", "fuzz@%h", "--pool", "threads", "-c", "4")
    try:
        make_tiny_sd(root / TINY_MODEL)  # while the worker starts
        wait_for_worker(app, "fuzz@")
        yield create_api(settings_, celery_app=app)
        asgi.shutdown_lifespans()
    finally:
        stop_process(worker)
        EmbeddedRedis(home).stop()


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
def test_api_answers_match_its_schema_and_are_never_5xx(case: schemathesis.Case, api: object) -> None:
    case.call_and_validate(app=api, checks=CHECKS)


def test_the_static_schema_is_the_served_one(api: object) -> None:
    # The tests above are made from a schema built at import; the API under test must serve the same.
    assert api.openapi() == schema.raw_schema

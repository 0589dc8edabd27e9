"""The error tree and its one mapping to HTTP statuses (modelq.api.errors.STATUSES)."""

from __future__ import annotations

import pytest

from modelq import errors
from modelq.api.errors import DESCRIPTIONS, STATUSES, status_of

pytestmark = pytest.mark.fast


def test_each_error_answers_the_status_its_kind_calls_for() -> None:
    assert status_of(errors.InvalidInput("width must be a multiple of 8", field="width")) == 422
    assert status_of(errors.InvalidDocument("encrypted", reason="encrypted")) == 422  # a kind of bad input
    assert status_of(errors.PayloadTooLarge("over 10 MiB")) == 413
    assert status_of(errors.NameNotFound("no model at /x", field="model")) == 404
    assert status_of(errors.JobNotFound("j1")) == 404
    assert status_of(errors.QueueFull("cpu", 10, 10, 5)) == 429
    assert status_of(errors.JobCancelled("j1")) == 409
    assert status_of(errors.ConfigError("key", "bad")) == 500  # not the request's fault


def test_no_entry_of_the_table_is_hidden_behind_an_earlier_one() -> None:
    # the first match wins: a subclass listed after its base would never be reached
    for i, (later, _) in enumerate(STATUSES):
        for earlier, _status in STATUSES[:i]:
            assert not issubclass(later, earlier), f"{later.__name__} comes after its base {earlier.__name__}"
    # and every status the table answers is described in the OpenAPI schema
    assert {status for _, status in STATUSES} <= set(DESCRIPTIONS)


def test_a_task_is_stopped_by_a_signal_that_is_no_api_error() -> None:
    stop = errors.TaskCancelled("j1")
    assert not isinstance(stop, errors.ModelqError) and stop.job_id == "j1"

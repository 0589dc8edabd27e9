"""How long an ``llm`` call waits before trying again: ``Retry-After`` in its three spellings, and
exponential backoff with jitter when the server says nothing."""

from __future__ import annotations

import email.utils

import pytest

from modelq.workloads.llm.retry import RetryPolicy, is_retryable_status, retry_after_seconds

pytestmark = pytest.mark.fast


def test_retry_after_is_read_in_seconds_milliseconds_or_as_a_date() -> None:
    assert retry_after_seconds({"Retry-After": "2.5"}) == 2.5
    assert retry_after_seconds({"retry-after-ms": "750", "retry-after": "9"}) == 0.75
    date = email.utils.formatdate(1_000_030.0, usegmt=True)
    assert retry_after_seconds({"Retry-After": date}, now=1_000_000.0) == pytest.approx(30.0)
    assert retry_after_seconds({"Retry-After": "soon"}) is None
    assert retry_after_seconds({}) is None


def test_a_retry_never_comes_before_retry_after_and_backoff_doubles_with_jitter() -> None:
    policy = RetryPolicy(max_retries=5, base=0.5, cap=4.0)
    for _ in range(200):
        assert 3.0 <= policy.delay(1, retry_after=3.0) <= 4.0
        assert 4.0 <= policy.delay(1, retry_after=90.0) <= 5.0  # capped
        assert 0.25 <= policy.delay(1) <= 0.5
        assert 1.0 <= policy.delay(3) <= 2.0
        assert 2.0 <= policy.delay(10) <= 4.0
    assert len({round(policy.delay(3), 6) for _ in range(50)}) > 1  # jitter: not all the same


def test_only_what_another_attempt_can_fix_is_retried() -> None:
    assert all(is_retryable_status(s) for s in (408, 409, 429, 500, 502, 503, 504))
    assert not any(is_retryable_status(s) for s in (400, 401, 403, 404, 422))

"""When to call an LLM server again: exponential backoff with jitter, and what ``Retry-After`` says.

Retried: 408, 409, 429 and every 5xx answer, timeouts and connection errors (what the official
OpenAI client retries too). Other 4xx answers are the request's fault and are not retried.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass

RETRYABLE_STATUS = frozenset({408, 409, 429})


def is_retryable_status(status: int) -> bool:
    return status in RETRYABLE_STATUS or status >= 500


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds the server asked us to wait: ``retry-after-ms`` (OpenAI), or ``Retry-After`` in
    seconds or as an HTTP date. None when absent or unreadable."""
    lowered = {k.lower(): v for k, v in headers.items()}
    raw_ms = lowered.get("retry-after-ms")
    if raw_ms is not None:
        try:
            return max(0.0, float(raw_ms) / 1000.0)
        except ValueError:
            pass
    raw = lowered.get("retry-after")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass(frozen=True)
class RetryPolicy:
    """How many times and how long to wait between attempts of one call."""

    #: Retries after the first attempt (so ``max_retries + 1`` attempts in all).
    max_retries: int = 4
    #: First backoff in seconds; it doubles on every retry.
    base: float = 0.5
    #: No wait is longer than this, a server's ``Retry-After`` included.
    cap: float = 60.0

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first retry).

        With ``Retry-After`` the wait is never shorter than the server asked (up to ``cap``), plus
        a little jitter so that many waiting calls do not come back at the same instant. Without
        it: exponential backoff with "equal jitter", between half and all of ``base * 2**(retry-1)``.
        """
        if retry_after is not None:
            wait = min(retry_after, self.cap)
            return wait + random.uniform(0.0, min(1.0, 0.1 * wait + 0.05))
        ceiling = min(self.cap, self.base * 2 ** (retry - 1))
        return ceiling / 2 + random.uniform(0.0, ceiling / 2)

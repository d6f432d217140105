"""Retries of idempotent API requests: which failures are worth another try, and when.

Metadata calls are retried on transport failures, 429 and 502/503/504; download bodies are
not (the content layer resumes them, with `is_transient` to tell which failures to resume).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import trio

from mkwfs.remote.errors import ApiError, HTTPStatusError, Offline, RateLimited, TransportError

__all__ = ["RETRYABLE_STATUSES", "RetryPolicy", "is_transient", "retrying"]

logger = logging.getLogger("mkwfs.api")

T = TypeVar("T")

#: Statuses worth another try of an idempotent request: a proxy or upstream hiccup.
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of idempotent metadata requests; ``attempts=1`` disables them.

    The delay before retry ``n`` (0-based) is full-jitter exponential backoff,
    ``uniform(0, min(max_delay, base_delay * 2**n))``, or the server's ``Retry-After``
    capped by ``max_delay`` for a 429 that gave one.
    """

    attempts: int = 4
    base_delay: float = 0.25
    max_delay: float = 8.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"RetryPolicy.attempts must be at least 1, not {self.attempts}")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("RetryPolicy delays must not be negative")

    def delay(self, retry: int, error: ApiError) -> float:
        """Seconds to wait before retry number ``retry`` (0-based) after ``error``."""
        if isinstance(error, RateLimited) and error.retry_after is not None:
            return min(self.max_delay, error.retry_after)
        return random.uniform(0, min(self.max_delay, self.base_delay * 2**retry))


def is_transient(error: ApiError) -> bool:
    """True for failures that another try of the same idempotent request may not meet
    (not ``Offline``: that request was not sent)."""
    if isinstance(error, Offline):
        return False
    if isinstance(error, TransportError):
        return True
    return isinstance(error, HTTPStatusError) and error.status in RETRYABLE_STATUSES


async def retrying(policy: RetryPolicy, call: Callable[[], Awaitable[T]]) -> T:
    """Await ``call()``, again after a transient failure, up to the policy's attempts;
    the last failure, or the first that is not transient, is raised."""
    failures = 0
    while True:
        try:
            return await call()
        except ApiError as exc:
            failures += 1
            if failures >= policy.attempts or not is_transient(exc):
                raise
            delay = policy.delay(failures - 1, exc)
            logger.info("retry %d in %.2f s after: %s", failures, delay, exc)
            await trio.sleep(delay)

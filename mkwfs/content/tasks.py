"""Background tasks of the content store, which must never take the mount down."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)


async def guarded(task: Callable[..., Awaitable[None]], *args: Any) -> None:
    """Run a background task that must not take the mount down: an unexpected error is
    logged, never raised into the nursery that serves every request."""
    try:
        await task(*args)
    except Exception:
        log.exception("background task %s failed", getattr(task, "__name__", task))

"""Stale-if-error: the last good copy of a fact, served while the server fails.

* ``server_failed``: which failures a stale copy may hide (RFC 5861's cases);
* ``LastGood``: the last good copy of each key, kept in a ``FactTable`` past any TTL, and
  asked again with its validator (a 304 keeps it, renewed);
* ``Staleness``: whether copies are being served past their time, and whether the mount is
  offline (it started without the server), for ``mkwfs status``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

import trio

from mkwfs.catalog.store import FactTable, Fetched
from mkwfs.remote.errors import ApiError, HTTPStatusError, TransportError
from mkwfs.remote.validators import Answer, Validator

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
T = TypeVar("T")

log = logging.getLogger(__name__)

#: Seconds a stale answer is given without asking the server again, after it failed.
STALE_RETRY = 5.0


@dataclass
class Staleness:
    """Whether listings are served past their time because the server fails, for ``mkwfs
    status``. Logs one warning when that starts and one when the server answers again.
    Times are ``time.time()``."""

    #: When the first stale answer was given since the server last answered; None: fresh.
    since: float | None = None
    #: Stale answers given in all.
    served: int = 0
    #: The failure that made the last one stale (no secrets: an ``ApiError`` message).
    last_error: str | None = None
    #: Since when the mount is offline: it started without the server, from what is on
    #: disk, and asks the server nothing but `Catalog.check` until it answers; None: online.
    offline_since: float | None = None

    @property
    def active(self) -> bool:
        return self.since is not None

    @property
    def offline(self) -> bool:
        return self.offline_since is not None

    def go_offline(self, error: ApiError) -> None:
        """The server is out of reach at mount time: serve what is on disk."""
        now = time.time()
        self.offline_since = self.since = now
        self.last_error = str(error)
        log.warning(
            "the server is out of reach (%s): mounted OFFLINE from the listings on disk; "
            "uncached files and listings give EIO until it answers again (asked every few "
            "seconds)",
            error,
        )

    def stale(self, error: ApiError) -> None:
        if self.since is None:
            self.since = time.time()
            log.warning(
                "serving cached listings while the server fails (%s); uncached files and "
                "listings give EIO until it answers again",
                error,
            )
        self.served += 1
        self.last_error = str(error)

    def fresh(self) -> None:
        """The server answered a request again."""
        if self.offline_since is not None:
            log.warning("the server answers again: the mount is ONLINE")
        elif self.since is not None:
            log.warning("the server answers again: listings are fresh again")
        self.since = self.offline_since = None


def server_failed(error: ApiError) -> bool:
    """Whether stale-if-error covers ``error`` (RFC 5861's cases): no answer, or none in
    time (``TransportError``), a 5xx or a 429. A 401, 403 or 404, or a malformed answer, is
    the server's word and is not hidden."""
    if isinstance(error, TransportError):
        return True
    return isinstance(error, HTTPStatusError) and (error.status >= 500 or error.status == 429)


class LastGood(Generic[K, V]):
    """Stale-if-error over a cache: the last value loaded for each key (`load`, `put`),
    kept in ``table`` past any TTL with the time it was fetched and its validator, and given
    instead of a failure of the server (``server_failed``). Other failures are raised. After
    a failure, the stale value is given for ``STALE_RETRY`` seconds without asking again, so
    that browsing a mount whose server is down does not wait for it at every step."""

    def __init__(
        self,
        staleness: Staleness,
        table: FactTable[K, V],
        *,
        timer: Callable[[], float] = trio.current_time,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._staleness = staleness
        self._table = table
        self._timer = timer
        self._wall = wall
        #: Until then (on ``timer``) the server is not asked again for the key: it just failed.
        self._failed_until: dict[K, float] = {}

    def fact(self, key: K) -> Fetched[V] | None:
        """The last good copy of ``key``, with its fetch time and validator."""
        return self._table.get(key)

    def put(self, key: K, value: V, validator: Validator | None = None) -> None:
        self._table.put(key, Fetched(value, self._wall(), validator))
        self._failed_until.pop(key, None)

    async def load(
        self,
        key: K,
        ask: Callable[[Validator | None], Awaitable[Answer[T]]],
        make: Callable[[T], V],
        unchanged: Callable[[V], object] = lambda value: None,
    ) -> V:
        """Ask the server for ``key`` with the validator of the copy kept (``ask``), and
        keep what comes: ``make`` of a new answer, or, when the server says the copy is
        unchanged (304: no body, no parse), the copy, renewed (``unchanged`` is called with
        it, for what a new answer's ``make`` would also have done)."""
        good = self._table.get(key)
        answer = await ask(None if good is None else good.validator)
        if answer.value is None:
            if good is None:  # a 304 to a request without conditions: the remote refuses it
                raise AssertionError("not modified, but nothing was kept")
            self._table.renew(key, self._wall())
            self._failed_until.pop(key, None)
            unchanged(good.value)
            return good.value
        value = make(answer.value)
        self.put(key, value, answer.validator)
        return value

    def retry_now(self) -> None:
        """Ask the server at the next ``get`` even after a recent failure (the values stay
        for the next failure)."""
        self._failed_until.clear()

    async def get(self, key: K, fresh: Callable[[], Awaitable[V]]) -> V:
        """``await fresh()`` (a cached value, or one newly loaded with `load`); or, when the
        server failed, the last good value if there is one."""
        good = self._table.get(key)
        if good is not None and self._timer() < self._failed_until.get(key, -math.inf):
            return good.value
        try:
            value = await fresh()
        except ApiError as exc:
            if good is None or not server_failed(exc):
                raise
            self._failed_until[key] = self._timer() + STALE_RETRY
            self._staleness.stale(exc)
            return good.value
        return value

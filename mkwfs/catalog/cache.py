"""Caches of awaited results: single flight per key, and TTL caches on an injected clock.

``SingleFlight`` makes concurrent callers for one key share one call: the first caller runs
the loader, the others wait for its outcome. ``AsyncTTLCache`` keeps successful results for
``ttl`` seconds of its ``timer`` (trio's clock by default, so tests run on ``MockClock``);
failures are never cached, so the next call after an error asks again. ``StateAwareCache``
keeps a result long when the loader says it is final (a finished build's files) and briefly
while it may still change (a running build's).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

import cachetools
import trio

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _Flight(Generic[V]):
    __slots__ = ("done", "error", "succeeded", "value")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.succeeded = False
        self.value: V | None = None
        self.error: BaseException | None = None


class SingleFlight(Generic[K, V]):
    """At most one call in flight per key; concurrent callers share its result or error."""

    def __init__(self) -> None:
        self._flights: dict[K, _Flight[V]] = {}

    def in_flight(self, key: K) -> bool:
        return key in self._flights

    async def run(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        while (flight := self._flights.get(key)) is not None:
            await flight.done.wait()
            if flight.error is not None:
                raise flight.error
            if flight.succeeded:
                return flight.value  # type: ignore[return-value]
            # The leader was cancelled before it finished: try again, maybe as the leader.
        flight = _Flight[V]()
        self._flights[key] = flight
        try:
            value = await load()
        except Exception as exc:
            flight.error = exc
            raise
        else:
            flight.value = value
            flight.succeeded = True
            return value
        finally:
            del self._flights[key]
            flight.done.set()


class AsyncTTLCache(Generic[K, V]):
    """Results of an async loader, kept ``ttl`` seconds, loaded once per key at a time.

    ``ttl`` may be ``math.inf``. ``maxsize`` bounds the number of keys (least recently used
    go first). ``timer`` must be callable wherever the cache is used; the default,
    ``trio.current_time``, only works inside ``trio.run``.
    """

    def __init__(
        self,
        *,
        ttl: float,
        maxsize: int = 4096,
        timer: Callable[[], float] = trio.current_time,
    ) -> None:
        self.ttl = ttl
        if math.isinf(ttl):
            self._entries: cachetools.Cache[K, V] = cachetools.LRUCache(maxsize=maxsize)
        else:
            self._entries = cachetools.TTLCache(maxsize=maxsize, ttl=ttl, timer=timer)
        self._flights = SingleFlight[K, V]()

    def peek(self, key: K) -> V | None:
        """The cached value if it is still fresh, without loading."""
        try:  # one lookup: get() is a membership test and then the same lookup
            return self._entries[key]
        except KeyError:
            return None

    def put(self, key: K, value: V) -> None:
        self._entries[key] = value

    def invalidate(self, key: K | None = None) -> None:
        """Forget one key, or everything when ``key`` is None."""
        if key is None:
            self._entries.clear()
        else:
            self._entries.pop(key, None)

    async def get(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        cached = self._entries.get(key)
        if cached is not None:
            return cached

        async def load_and_store() -> V:
            value = await load()
            self._entries[key] = value
            return value

        return await self._flights.run(key, load_and_store)


class StateAwareCache(Generic[K, V]):
    """Results of an async loader that also says whether its result is final: final ones
    are kept ``final_ttl`` seconds, the others ``live_ttl``. One load per key at a time;
    failures are not cached. ``maxsize`` bounds each of the two kinds."""

    def __init__(
        self,
        *,
        final_ttl: float,
        live_ttl: float,
        maxsize: int = 1024,
        timer: Callable[[], float] = trio.current_time,
    ) -> None:
        self._final = AsyncTTLCache[K, V](ttl=final_ttl, maxsize=maxsize, timer=timer)
        self._live = AsyncTTLCache[K, V](ttl=live_ttl, maxsize=maxsize, timer=timer)
        self._flights = SingleFlight[K, V]()

    def peek(self, key: K) -> V | None:
        """The cached value if it is still fresh, without loading."""
        value = self._final.peek(key)
        return self._live.peek(key) if value is None else value

    def put(self, key: K, value: V, *, final: bool) -> None:
        (self._final if final else self._live).put(key, value)
        (self._live if final else self._final).invalidate(key)

    def invalidate(self, key: K | None = None) -> None:
        """Forget one key, or everything when ``key`` is None."""
        self._final.invalidate(key)
        self._live.invalidate(key)

    async def get(self, key: K, load: Callable[[], Awaitable[tuple[V, bool]]]) -> V:
        cached = self.peek(key)
        if cached is not None:
            return cached

        async def load_and_store() -> V:
            value, final = await load()
            self.put(key, value, final=final)
            return value

        return await self._flights.run(key, load_and_store)

"""SingleFlight and AsyncTTLCache, on trio's fake clock."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from mkwfs.catalog.cache import AsyncTTLCache, SingleFlight


async def test_single_flight_shares_one_call_between_concurrent_callers() -> None:
    flights = SingleFlight[str, int]()
    calls = 0
    release = trio.Event()

    async def load() -> int:
        nonlocal calls
        calls += 1
        await release.wait()
        return 42

    results: list[int] = []

    async def caller() -> None:
        results.append(await flights.run("k", load))

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(caller)
        await trio.testing.wait_all_tasks_blocked()
        assert flights.in_flight("k")
        release.set()
    assert results == [42] * 5
    assert calls == 1
    assert not flights.in_flight("k")


async def test_single_flight_shares_errors_and_does_not_keep_them() -> None:
    flights = SingleFlight[str, int]()
    calls = 0

    async def failing() -> int:
        nonlocal calls
        calls += 1
        await trio.lowlevel.checkpoint()
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await flights.run("k", failing)

    async def working() -> int:
        return 7

    assert await flights.run("k", working) == 7
    assert calls == 1


async def test_single_flight_survives_a_cancelled_leader() -> None:
    flights = SingleFlight[str, int]()
    started = trio.Event()

    async def slow() -> int:
        started.set()
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def fast() -> int:
        return 3

    result: list[int] = []
    async with trio.open_nursery() as nursery:
        leader_scope = trio.CancelScope()

        async def leader() -> None:
            with leader_scope:
                await flights.run("k", slow)

        async def follower() -> None:
            await started.wait()
            result.append(await flights.run("k", fast))

        nursery.start_soon(leader)
        nursery.start_soon(follower)
        await started.wait()
        await trio.testing.wait_all_tasks_blocked()
        leader_scope.cancel()
    assert result == [3]


async def test_ttl_cache_expires_on_the_injected_clock(mock_clock: trio.testing.MockClock) -> None:
    cache = AsyncTTLCache[str, int](ttl=10.0)
    calls = 0

    async def load() -> int:
        nonlocal calls
        calls += 1
        return calls

    assert await cache.get("k", load) == 1
    mock_clock.jump(9.5)
    assert await cache.get("k", load) == 1
    assert cache.peek("k") == 1
    mock_clock.jump(1.0)
    assert cache.peek("k") is None
    assert await cache.get("k", load) == 2
    assert calls == 2


async def test_ttl_cache_does_not_cache_failures_and_can_be_invalidated() -> None:
    cache = AsyncTTLCache[str, int](ttl=60.0)

    async def failing() -> int:
        raise RuntimeError("down")

    with pytest.raises(RuntimeError):
        await cache.get("k", failing)

    async def one() -> int:
        return 1

    async def two() -> int:
        return 2

    assert await cache.get("k", one) == 1
    assert await cache.get("k", two) == 1
    cache.invalidate("k")
    assert await cache.get("k", two) == 2
    cache.invalidate()
    assert cache.peek("k") is None


async def test_infinite_ttl_keeps_values_until_evicted(mock_clock: trio.testing.MockClock) -> None:
    cache = AsyncTTLCache[int, int](ttl=float("inf"), maxsize=2)
    for key in range(3):
        cache.put(key, key)
    mock_clock.jump(10**9)
    assert cache.peek(0) is None  # least recently used went first
    assert cache.peek(1) == 1
    assert cache.peek(2) == 2

"""Stale-if-error on its own: which failures a last good copy hides, when the server is
asked again, what ``Staleness`` reports, and the memory store it keeps copies in. A loader
stands in for the API; TTLs pass on a ``MockClock``."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from mkwfs.catalog.stale import STALE_RETRY, LastGood, Staleness, server_failed
from mkwfs.catalog.store import FactTable, Fetched, MemoryStore
from mkwfs.remote.errors import (
    ApiError,
    NotFound,
    PermissionDenied,
    ProtocolError,
    RateLimited,
    ServerError,
    TokenRejected,
    TransportError,
)
from mkwfs.remote.validators import Answer, Validator

URL = "http://emulator.test/api/v1/builds"


def test_only_failures_of_the_server_are_covered() -> None:
    assert server_failed(TransportError("refused", url=URL))
    assert server_failed(ServerError("503", url=URL, status=503))
    assert server_failed(RateLimited("429", url=URL, status=429))
    for error in (
        TokenRejected("401", url=URL, status=401),
        PermissionDenied("403", url=URL, status=403),
        NotFound("404", url=URL, status=404),
        ProtocolError("cut JSON", url=URL),
    ):
        assert not server_failed(error)


class Loader:
    """Answers with ``value``, or raises ``error`` when it is set; counts its calls."""

    def __init__(self) -> None:
        self.value = 1
        self.error: ApiError | None = None
        self.calls = 0

    async def __call__(self, validator: Validator | None) -> Answer[int]:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return Answer(self.value, None)


async def get(last: LastGood[str, int], load: Loader) -> int:
    """The value of "k" through ``last``, loaded by ``load`` when asked."""
    return await last.get("k", lambda: last.load("k", load, lambda value: value))


async def test_a_failure_of_the_server_gives_the_last_good_value_for_a_while(
    mock_clock: trio.testing.MockClock,
) -> None:
    staleness = Staleness()
    last = LastGood[str, int](staleness, MemoryStore().table("t", maxsize=8), wall=lambda: 7.0)
    load = Loader()
    assert await get(last, load) == 1
    load.value, load.error = 2, ServerError("503", url=URL, status=503)
    assert await get(last, load) == 1
    assert staleness.active and staleness.served == 1 and staleness.last_error == "503"
    assert await get(last, load) == 1  # not asked again within STALE_RETRY
    assert load.calls == 2
    mock_clock.jump(STALE_RETRY + 0.1)
    load.error = None
    assert await get(last, load) == 2
    staleness.fresh()
    assert staleness.since is None and staleness.served == 1  # one stale answer was given


async def test_without_a_good_value_or_with_the_servers_word_the_error_comes_through() -> None:
    staleness = Staleness()
    last = LastGood[str, int](staleness, MemoryStore().table("t", maxsize=8))
    load = Loader()
    load.error = ServerError("503", url=URL, status=503)
    with pytest.raises(ServerError):
        await get(last, load)
    load.error = None
    await get(last, load)
    load.error = NotFound("404", url=URL, status=404)
    with pytest.raises(NotFound):
        await get(last, load)
    assert not staleness.active


async def test_retry_now_asks_again_right_after_a_failure() -> None:
    last = LastGood[str, int](Staleness(), MemoryStore().table("t", maxsize=8))
    load = Loader()
    await get(last, load)
    load.error = TransportError("refused", url=URL)
    await get(last, load)
    load.value, load.error = 3, None
    last.retry_now()
    assert await get(last, load) == 3


def test_the_memory_store_keeps_the_newest_fact_and_drops_the_least_recently_used() -> None:
    table: FactTable[str, int] = MemoryStore().table("t", maxsize=2)
    table.put("a", Fetched(1, 10.0))
    table.put("a", Fetched(2, 11.0))
    table.put("b", Fetched(3, 12.0))
    assert table.get("a") == Fetched(2, 11.0)  # and "a" is now the most recently used
    table.put("c", Fetched(4, 13.0))
    assert table.get("b") is None
    assert table.get("a") == Fetched(2, 11.0) and table.get("c") == Fetched(4, 13.0)


async def test_a_304_keeps_the_copy_renewed_and_calls_unchanged() -> None:
    times = iter([10.0, 20.0])
    table: FactTable[str, list[int]] = MemoryStore().table("t", maxsize=2)
    last = LastGood[str, list[int]](Staleness(), table, wall=lambda: next(times))
    first = await last.load("k", lambda v: _answer([1], Validator('W/"1"')), list)
    asked: list[Validator | None] = []
    seen: list[list[int]] = []

    async def not_modified(validator: Validator | None) -> Answer[list[int]]:
        asked.append(validator)
        return Answer(None, validator)

    again = await last.load("k", not_modified, list, seen.append)
    assert again is first and seen == [first] and asked == [Validator('W/"1"')]
    assert table.get("k") == Fetched([1], 20.0, Validator('W/"1"'))


async def _answer(value: list[int], validator: Validator) -> Answer[list[int]]:
    return Answer(value, validator)


def test_offline_starts_stale_and_ends_at_the_first_answer() -> None:
    staleness = Staleness()
    staleness.go_offline(TransportError("refused", url=URL))
    assert staleness.offline and staleness.active and staleness.last_error == "refused"
    assert staleness.offline_since == staleness.since
    staleness.fresh()
    assert (staleness.offline, staleness.active) == (False, False)

"""Fetches over real HTTP on loopback: one transfer per body, streaming, resume, retries."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import trio

from mkwfs.content.config import ContentConfig
from mkwfs.emulator import BIG_ZIP, Emulator
from mkwfs.remote.errors import ProtocolError, ServerError, TransportError
from tests.content.support import (
    GET,
    SIZE,
    body,
    open_store,
    read_all,
    read_member,
)
from tests.helpers import configure


async def test_concurrent_readers_share_one_download(
    emulator: Emulator, base_url: str, tmp_path: Path
) -> None:
    expected = body(emulator, BIG_ZIP)
    results: list[bytes] = []
    async with open_store(emulator, base_url, tmp_path / "cache") as store:

        async def reader() -> None:
            results.append(await read_all(store, BIG_ZIP))

        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(reader)
    assert results == [expected] * 10
    assert emulator.requests[GET] == 1
    assert (tmp_path / "cache" / "content" / str(BIG_ZIP)).read_bytes() == expected
    assert not (tmp_path / "cache" / "content" / f"{BIG_ZIP}.part").exists()


async def test_first_bytes_are_served_before_the_body_is_complete(
    emulator: Emulator, base_url: str, tmp_path: Path
) -> None:
    configure(emulator, throttle=SIZE)  # the whole body takes about a second
    expected = body(emulator, BIG_ZIP)
    async with open_store(emulator, base_url, tmp_path / "cache") as store:
        with trio.fail_after(10):
            first = await store.read(BIG_ZIP, 0, 64 * 1024)
        assert first == expected[: 64 * 1024]
        assert emulator.bytes_sent < SIZE  # still streaming
        assert store.known_size(BIG_ZIP) == SIZE or store.known_size(BIG_ZIP) == len(expected)
        with trio.fail_after(30):
            assert await read_all(store, BIG_ZIP) == expected


async def test_a_dropped_connection_is_resumed_without_corrupting_bytes(
    emulator: Emulator, base_url: str, tmp_path: Path
) -> None:
    expected = body(emulator, BIG_ZIP)
    # Every response is cut after two thirds of the body: the second one gets the rest.
    configure(emulator, drop_after=len(expected) * 2 // 3)
    async with open_store(emulator, base_url, tmp_path / "cache") as store:
        with trio.fail_after(20):
            assert await read_all(store, BIG_ZIP) == expected
    assert emulator.requests[GET] == 2
    # The retry asked only for what was missing (starting over would send 5/3 of the body;
    # what was in flight when the connection broke may be sent twice).
    assert emulator.bytes_sent < len(expected) * 4 // 3


async def test_a_failed_read_is_an_error_and_the_next_read_succeeds(
    emulator: Emulator, base_url: str, tmp_path: Path
) -> None:
    expected = body(emulator, BIG_ZIP)
    emulator.fail_next(GET, 500)  # not transient: no retry
    async with open_store(emulator, base_url, tmp_path / "cache") as store:
        with trio.fail_after(10), pytest.raises(ServerError):
            await store.read(BIG_ZIP, 0, 4096)
        with trio.fail_after(10):
            assert await read_all(store, BIG_ZIP) == expected


async def test_retries_give_up_after_the_stall_timeout(
    emulator: Emulator, base_url: str, tmp_path: Path
) -> None:
    # Without Range every retry starts over and is cut at the same place: no progress.
    expected = body(emulator, BIG_ZIP)
    configure(emulator, drop_after=SIZE // 2, ranges=False)
    async with open_store(emulator, base_url, tmp_path / "cache", stall_timeout=1.0) as store:
        # A cut connection shows as a transport error or as a short body: either way EIO.
        with trio.fail_after(10), pytest.raises((TransportError, ProtocolError)):
            await store.read(BIG_ZIP, SIZE - 4096, 4096)
        configure(emulator, drop_after=None)
        with trio.fail_after(10):
            assert hashlib.sha256(await read_all(store, BIG_ZIP)).digest() == (
                hashlib.sha256(expected).digest()
            )


async def test_without_range_support_random_reads_share_one_download(
    emulator: Emulator, base_url: str, tmp_path: Path
) -> None:
    configure(emulator, ranges=False)
    expected = body(emulator, BIG_ZIP)
    async with open_store(emulator, base_url, tmp_path / "cache") as store:
        with trio.fail_after(20):
            assert await read_member(store, BIG_ZIP, None)
            assert await read_all(store, BIG_ZIP) == expected
        assert store.ranges is False
    assert emulator.requests[GET] == 1


async def test_a_reader_that_stops_early_does_not_download_everything(
    emulator: Emulator, base_url: str, tmp_path: Path
) -> None:
    config = ContentConfig(readahead=256 * 1024, idle_close=0.3)
    configure(emulator, throttle=4 * SIZE)
    async with open_store(emulator, base_url, tmp_path / "cache", config=config) as store:
        with trio.fail_after(10):
            await store.read(BIG_ZIP, 0, 4096)
            await trio.sleep(1.5)
        assert store.stats().bytes_received < SIZE // 2
        # Reading on later resumes where the fetch stopped.
        with trio.fail_after(20):
            assert await read_all(store, BIG_ZIP) == body(emulator, BIG_ZIP)
        assert store.stats().bytes_received < len(body(emulator, BIG_ZIP)) + SIZE // 2

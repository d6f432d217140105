"""Sizes through the store: one probe each, remembered on disk, batches for a directory."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest
import trio

from mkwfs.catalog.sizes import SizeConfig
from mkwfs.content.store import ContentStore
from mkwfs.emulator import BIG_ZIP, DEMO_BUILD, LARGE_BUILD, Emulator
from tests.content.support import (
    GET,
    HEAD,
    body,
    demo_sizes,
    open_store,
    read_all,
)
from tests.helpers import configure


async def test_size_with_head(emulator: Emulator, base_url: str, tmp_path: Path) -> None:
    download = emulator.downloads_of(DEMO_BUILD)[0]["id"]
    async with open_store(emulator, base_url, tmp_path / "cache") as store:
        assert await store.size(download) == len(body(emulator, download))
        assert await store.size(download) == len(body(emulator, download))
    assert emulator.requests[HEAD] == 1 and emulator.requests[GET] == 0
    # Remembered on disk: a new store asks nothing.
    async with open_store(emulator, base_url, tmp_path / "cache") as store:
        assert await store.size(download) == len(body(emulator, download))
    assert emulator.requests[HEAD] == 1


async def test_size_when_head_is_refused(emulator: Emulator, base_url: str, tmp_path: Path) -> None:
    configure(emulator, head=False)
    async with open_store(emulator, base_url, tmp_path / "cache") as store:
        assert await store.size(BIG_ZIP) == len(body(emulator, BIG_ZIP))
    assert emulator.requests[GET] == 1
    assert emulator.bytes_sent < 64 * 1024  # headers, not the body


async def test_size_without_head_or_content_length_takes_the_body_once(
    emulator: Emulator, base_url: str, tmp_path: Path
) -> None:
    configure(emulator, head=False, content_length=False, ranges=False)
    expected = body(emulator, BIG_ZIP)
    async with open_store(emulator, base_url, tmp_path / "cache") as store:
        with trio.fail_after(10):
            assert await store.size(BIG_ZIP) == len(expected)
            assert await read_all(store, BIG_ZIP) == expected
    # The probe's GET tells no size (200, chunked): the body itself is fetched once.
    assert emulator.requests[GET] == 2


async def wait_for_sizes(store: ContentStore, ids: Iterable[int]) -> dict[int, int]:
    """The sizes ``prefetch_sizes`` found, asked for as a stat would (waiting for them)."""
    with trio.fail_after(20):
        return {i: await store.size(i) for i in ids}


async def test_a_prefetch_probes_each_size_once_with_a_head(
    emulator: Emulator, base_url: str, tmp_path: Path
) -> None:
    expected = demo_sizes(emulator)
    async with open_store(emulator, base_url, tmp_path / "cache") as store:
        store.prefetch_sizes(expected)
        assert await wait_for_sizes(store, expected) == expected
    assert emulator.requests[HEAD] == len(expected)
    assert emulator.requests[GET] == 0


async def test_prefetches_made_while_probes_run_join_them_within_the_bound(
    emulator: Emulator, base_url: str, tmp_path: Path
) -> None:
    """A scan queues more sizes while the probes of the last ones run: the server still
    gets at most ``concurrent_probes`` requests at once, each size probed once."""
    expected = demo_sizes(emulator, LARGE_BUILD)
    ids = list(expected)
    async with open_store(emulator, base_url, tmp_path / "cache") as store:
        store.prefetch_sizes(ids[:100])
        with trio.fail_after(20):
            while emulator.requests[HEAD] < 20:  # noqa: ASYNC110 (the emulator's counter)
                await trio.sleep(0.001)
        for start in range(100, len(ids), 100):
            store.prefetch_sizes(ids[start : start + 100])
            await trio.sleep(0.005)
        assert await wait_for_sizes(store, ids) == expected
    assert 1 < emulator.peak_connections <= SizeConfig().concurrent_probes
    assert emulator.requests[HEAD] == len(ids)


@pytest.mark.parametrize("failure", [503, 401, 404])
async def test_a_prefetch_whose_batch_fails_finds_the_sizes_one_by_one(
    emulator: Emulator, base_url: str, tmp_path: Path, failure: int
) -> None:
    """An answer the batch cannot take stops it; the full probe of each size left over
    then does what a single stat would (retry, log in again, or report the error): the
    failure here is a single one, so every size is found in the end."""
    expected = demo_sizes(emulator, LARGE_BUILD)
    emulator.fail_next(HEAD, failure)
    async with open_store(emulator, base_url, tmp_path / "cache") as store:
        store.prefetch_sizes(expected)
        assert await wait_for_sizes(store, expected) == expected
    # The failed probe and the ones in flight with it are sent again, no more.
    assert len(expected) < emulator.requests[HEAD] <= len(expected) + SizeConfig().concurrent_probes
    assert emulator.requests[GET] == 0


async def test_a_prefetch_on_a_server_without_head_asks_with_get_from_then_on(
    emulator: Emulator, base_url: str, tmp_path: Path
) -> None:
    expected = demo_sizes(emulator)
    configure(emulator, head=False)
    async with open_store(emulator, base_url, tmp_path / "cache") as store:
        store.prefetch_sizes(expected)
        assert await wait_for_sizes(store, expected) == expected
    # The batch learnt that HEAD is refused: every size then came from one ranged GET whose
    # body was never read, not from a HEAD refused once more first.
    assert emulator.requests[HEAD] <= SizeConfig().concurrent_probes
    assert emulator.requests[GET] == len(expected)
    assert emulator.bytes_sent <= len(expected)

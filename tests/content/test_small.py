"""Small bodies: fetched whole in one GET, served from memory, written without a ``.part``,
shared by concurrent readers; failures fall back to the streaming path or fail clearly."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import trio

from mkwfs.content.config import ContentConfig
from mkwfs.content.store import ContentStore
from mkwfs.emulator import LARGE_BUILD, Emulator
from mkwfs.remote.errors import ContentError, NotFound
from tests.content.support import GET, body, open_store, read_all

BATCH = 40


def small_ids(emulator: Emulator, count: int = BATCH) -> list[int]:
    return [d["id"] for d in emulator.downloads_of(LARGE_BUILD)[:count]]


async def learn_sizes(store: ContentStore, ids: list[int]) -> None:
    store.prefetch_sizes(ids)
    await store.wait_for_sizes(ids)
    assert all(store.known_size(i) is not None for i in ids)


async def test_a_cold_small_body_costs_one_get_and_leaves_no_part(
    emulator: Emulator, base_url: str, tmp_path: Path
) -> None:
    ids = small_ids(emulator)
    content = tmp_path / "cache" / "content"
    async with open_store(emulator, base_url, tmp_path / "cache") as store:
        with trio.fail_after(30):
            await learn_sizes(store, ids)
            for download_id in ids:
                expected = body(emulator, download_id)
                assert await store.read(download_id, 0, 1 << 20) == expected
                assert await store.read(download_id, 100, 50) == expected[100:150]
                assert await store.read(download_id, len(expected), 10) == b""
            await store.stop_fetches()  # the writes are done
        for download_id in ids:
            assert (content / str(download_id)).read_bytes() == body(emulator, download_id)
        assert not [p for p in os.listdir(content) if p.endswith((".part", ".map", ".new"))]
        assert store.stats().transfers == len(ids)
    assert emulator.requests[GET] == len(ids)
    # The journal names each body once the store closed (it synced them).
    noted = {int(line.split()[0]) for line in (content / "durable").read_text().splitlines()}
    assert noted == set(ids)


async def test_concurrent_readers_of_small_bodies_share_one_get_each(
    emulator: Emulator, base_url: str, tmp_path: Path
) -> None:
    ids = small_ids(emulator)
    digests: dict[tuple[int, int], str] = {}
    async with open_store(emulator, base_url, tmp_path / "cache") as store:

        async def reader(number: int) -> None:
            order = ids if number % 2 else list(reversed(ids))
            for download_id in order:
                data = await read_all(store, download_id, 1024)
                digests[number, download_id] = hashlib.sha256(data).hexdigest()

        with trio.fail_after(30):
            await learn_sizes(store, ids)
            async with trio.open_nursery() as nursery:
                for number in range(6):
                    nursery.start_soon(reader, number)
    for (_, download_id), digest in digests.items():
        assert digest == emulator.body_sha256(download_id)
    assert len(digests) == 6 * len(ids)
    assert emulator.requests[GET] == len(ids)


async def test_a_transient_failure_falls_back_to_the_stream_that_retries(
    emulator: Emulator, base_url: str, tmp_path: Path
) -> None:
    [download_id] = small_ids(emulator, 1)
    async with open_store(emulator, base_url, tmp_path / "cache") as store:
        with trio.fail_after(30):
            await learn_sizes(store, [download_id])
            emulator.fail_next(GET, 503)
            assert await read_all(store, download_id) == body(emulator, download_id)
    assert emulator.requests[GET] == 2


async def test_an_error_status_fails_the_read_and_is_not_kept(
    emulator: Emulator, base_url: str, tmp_path: Path
) -> None:
    [download_id] = small_ids(emulator, 1)
    async with open_store(emulator, base_url, tmp_path / "cache") as store:
        with trio.fail_after(30):
            await learn_sizes(store, [download_id])
            emulator.remove_download(download_id)
            with pytest.raises(NotFound):
                await store.read(download_id, 0, 100)
            emulator.reset_data()
            assert await read_all(store, download_id) == body(emulator, download_id)
    assert emulator.requests[GET] == 2


async def test_a_body_whose_size_changed_is_refused(
    emulator: Emulator, base_url: str, tmp_path: Path
) -> None:
    [download_id] = small_ids(emulator, 1)
    size = len(body(emulator, download_id))
    async with open_store(emulator, base_url, tmp_path / "cache") as store:
        with trio.fail_after(30):
            store._sizes.remember(download_id, size + 10)  # what a probe said before
            with pytest.raises(ContentError, match="changed"):
                await store.read(download_id, 0, 100)
            store._sizes.remember(download_id, size - 10)
            with pytest.raises(ContentError):
                await store.read(download_id, 0, 100)
        assert not (tmp_path / "cache" / "content" / str(download_id)).exists()


async def test_bodies_over_the_small_bound_take_the_streaming_path(
    emulator: Emulator, base_url: str, tmp_path: Path
) -> None:
    ids = small_ids(emulator, 3)
    config = ContentConfig(small_max=100)  # every body here is bigger
    content = tmp_path / "cache" / "content"
    async with open_store(emulator, base_url, tmp_path / "cache", config=config) as store:
        with trio.fail_after(30):
            await learn_sizes(store, ids)
            for download_id in ids:
                assert await read_all(store, download_id) == body(emulator, download_id)
    for download_id in ids:
        assert (content / str(download_id)).read_bytes() == body(emulator, download_id)
    assert emulator.requests[GET] == len(ids)


async def test_a_remount_serves_small_bodies_from_disk(
    emulator: Emulator, base_url: str, tmp_path: Path
) -> None:
    ids = small_ids(emulator, 10)
    config = ContentConfig(sync_delay=3600.0)  # nothing synced before the close
    for _ in range(2):
        async with open_store(emulator, base_url, tmp_path / "cache", config=config) as store:
            with trio.fail_after(30):
                await learn_sizes(store, ids)
                for download_id in ids:
                    assert await read_all(store, download_id) == body(emulator, download_id)
    assert emulator.requests[GET] == len(ids)

"""The cache within ``max_bytes``: least recently used first, never an open file."""

from __future__ import annotations

from pathlib import Path

import trio

from mkwfs.content.config import ContentConfig
from mkwfs.emulator import Emulator
from tests.content.support import (
    GET,
    HEAD,
    body,
    open_store,
    over_the_bound,
    read_all,
)

#: Bodies read 0.2 s ago may be evicted.
QUICK = ContentConfig(eviction_grace=0.2)


async def test_the_cache_stays_within_max_bytes(
    emulator: Emulator, base_url: str, tmp_path: Path
) -> None:
    downloads, sizes, limit = over_the_bound(emulator)
    cache = tmp_path / "cache"
    async with open_store(emulator, base_url, cache, max_bytes=limit, config=QUICK) as store:
        for download_id in downloads:
            assert await read_all(store, download_id) == body(emulator, download_id)
            await trio.sleep(QUICK.eviction_grace + 0.1)
        stats = store.stats()
        assert stats.cached_bytes <= limit
        on_disk = {p.name for p in (tmp_path / "cache" / "content").iterdir()}
        assert str(downloads[0]) not in on_disk  # the least recently used went first
        assert store.known_size(downloads[0]) == sizes[downloads[0]]  # its size is kept
        gets = emulator.requests[GET]
        assert await read_all(store, downloads[0]) == body(emulator, downloads[0])
        assert emulator.requests[GET] == gets + 1
        assert emulator.requests[HEAD] == len(downloads)


async def test_an_open_file_is_never_evicted(
    emulator: Emulator, base_url: str, tmp_path: Path
) -> None:
    downloads, _, limit = over_the_bound(emulator)
    content_dir = tmp_path / "cache" / "content"
    cache = tmp_path / "cache"
    async with open_store(emulator, base_url, cache, max_bytes=limit, config=QUICK) as store:
        store.hold(downloads[0])  # as fs.open does
        for download_id in downloads:
            assert await read_all(store, download_id) == body(emulator, download_id)
            await trio.sleep(QUICK.eviction_grace + 0.1)
        assert (content_dir / str(downloads[0])).exists()  # the oldest, but open
        assert not (content_dir / str(downloads[1])).exists()  # the next oldest went
        store.release(downloads[0])
        assert await read_all(store, downloads[1]) == body(emulator, downloads[1])
        await trio.sleep(QUICK.eviction_grace + 0.1)
        assert await read_all(store, downloads[2]) == body(emulator, downloads[2])
    assert not (content_dir / str(downloads[0])).exists()  # closed: it may go now

"""The content store over real HTTP on loopback: streaming, one transfer, resume, sizes."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import zipfile
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from mkwfs.content import store as content
from mkwfs.content.extents import Extents
from mkwfs.content.store import ContentStore, open_content_store
from mkwfs.emulator import (
    BIG_ZIP,
    DEMO_BUILD,
    LARGE_BUILD,
    Emulator,
    EmulatorConfig,
)
from mkwfs.fuse.mount import open_http_client
from mkwfs.remote.api import ApiClient, Credentials, RetryPolicy
from mkwfs.remote.errors import ProtocolError, ServerError, TransportError
from tests.helpers import configure

GET = "GET /api/v1/downloads/:id"
HEAD = "HEAD /api/v1/downloads/:id"
SIZE = 4 * 2**20


@pytest.fixture
def emulator(tmp_path: Path) -> Emulator:
    return Emulator(EmulatorConfig(big_file_size=SIZE, data_dir=tmp_path / "data"))


@asynccontextmanager
async def open_store(
    emulator: Emulator, url: str, cache: Path, **options: Any
) -> AsyncIterator[ContentStore]:
    async with open_http_client() as http:
        token = Credentials(token=emulator.issue_token())
        api = ApiClient(http, url, token, RetryPolicy(1), heads=http.curl)  # as the mount's
        async with open_content_store(api, cache, **options) as store:
            yield store


async def read_all(store: ContentStore, download_id: int, chunk: int = 128 * 1024) -> bytes:
    parts = []
    offset = 0
    while data := await store.read(download_id, offset, chunk):
        parts.append(data)
        offset += len(data)
    return b"".join(parts)


def body(emulator: Emulator, download_id: int) -> bytes:
    return emulator.body_path(download_id).read_bytes()


def demo_sizes(emulator: Emulator, build_id: int = DEMO_BUILD) -> dict[int, int]:
    return {
        d["id"]: emulator.body_path(d["id"]).stat().st_size for d in emulator.downloads_of(build_id)
    }


def over_the_bound(emulator: Emulator) -> tuple[list[int], dict[int, int], int]:
    """The demo build's downloads as listed, their sizes, and a cache bound they do not
    all fit under (by half the smallest)."""
    sizes = demo_sizes(emulator)
    return list(sizes), sizes, sum(sizes.values()) - min(sizes.values()) // 2


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


async def test_only_ranges_recorded_in_the_map_are_trusted_after_a_crash(
    emulator: Emulator, base_url: str, tmp_path: Path
) -> None:
    expected = body(emulator, BIG_ZIP)
    content = tmp_path / "cache" / "content"
    content.mkdir(parents=True)
    # A crash left 2000 bytes, of which the map vouches for the first 1000.
    (content / f"{BIG_ZIP}.part").write_bytes(expected[:1000] + b"\xff" * 1000)
    (content / f"{BIG_ZIP}.map").write_text(json.dumps({"size": None, "ranges": [[0, 1000]]}))
    async with open_store(emulator, base_url, tmp_path / "cache") as store:
        assert await read_all(store, BIG_ZIP) == expected
    assert emulator.bytes_sent == len(expected) - 1000
    assert not (content / f"{BIG_ZIP}.map").exists()
    assert (content / str(BIG_ZIP)).read_bytes() == expected


async def test_a_partial_body_without_a_map_is_fetched_again(
    emulator: Emulator, base_url: str, tmp_path: Path
) -> None:
    expected = body(emulator, BIG_ZIP)
    content = tmp_path / "cache" / "content"
    content.mkdir(parents=True)
    (content / f"{BIG_ZIP}.part").write_bytes(b"\xff" * 5000)
    async with open_store(emulator, base_url, tmp_path / "cache") as store:
        assert await read_all(store, BIG_ZIP) == expected
    assert emulator.bytes_sent == len(expected)


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


class StoreFile(io.RawIOBase):
    """A blocking file over ``ContentStore.read``, for zipfile running in a worker thread."""

    def __init__(self, store: ContentStore, download_id: int, size: int) -> None:
        self._store, self._id, self._size, self._pos = store, download_id, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._size}[whence]
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer: Any) -> int:
        data = trio.from_thread.run(self._store.read, self._id, self._pos, len(buffer))
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)


async def read_member(store: ContentStore, download_id: int, name: str | None) -> bytes:
    size = await store.size(download_id)

    def extract() -> bytes:
        with zipfile.ZipFile(io.BufferedReader(StoreFile(store, download_id, size))) as archive:
            return archive.read(name or archive.namelist()[0])

    return await trio.to_thread.run_sync(extract)


async def test_one_member_of_a_cold_zip_costs_its_bytes_and_few_requests(
    emulator: Emulator, base_url: str, tmp_path: Path
) -> None:
    with zipfile.ZipFile(emulator.body_path(BIG_ZIP)) as archive:
        info = max(archive.infolist(), key=lambda i: i.compress_size)
        expected = archive.read(info)
    assert info.compress_size >= SIZE // 16  # a real member, not a tiny one
    async with open_store(emulator, base_url, tmp_path / "cache") as store:
        with trio.fail_after(20):
            assert await read_member(store, BIG_ZIP, info.filename) == expected
        assert store.ranges is True
    assert emulator.requests[GET] <= 4
    assert emulator.bytes_sent <= info.compress_size + 2**20


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
    emulator: Emulator, base_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(content, "_READAHEAD", 256 * 1024)
    monkeypatch.setattr(content, "_IDLE_CLOSE", 0.3)
    configure(emulator, throttle=4 * SIZE)
    async with open_store(emulator, base_url, tmp_path / "cache") as store:
        with trio.fail_after(10):
            await store.read(BIG_ZIP, 0, 4096)
            await trio.sleep(1.5)
        assert store.stats().bytes_received < SIZE // 2
        # Reading on later resumes where the fetch stopped.
        with trio.fail_after(20):
            assert await read_all(store, BIG_ZIP) == body(emulator, BIG_ZIP)
        assert store.stats().bytes_received < len(body(emulator, BIG_ZIP)) + SIZE // 2


async def test_the_cache_stays_within_max_bytes(
    emulator: Emulator, base_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(content, "_EVICTION_GRACE", 0.2)
    downloads, sizes, limit = over_the_bound(emulator)
    async with open_store(emulator, base_url, tmp_path / "cache", max_bytes=limit) as store:
        for download_id in downloads:
            assert await read_all(store, download_id) == body(emulator, download_id)
            await trio.sleep(content._EVICTION_GRACE + 0.1)
        stats = store.stats()
        assert stats.cached_bytes <= limit
        on_disk = {p.name for p in (tmp_path / "cache" / "content").iterdir()}
        assert str(downloads[0]) not in on_disk  # the least recently used went first
        assert store.known_size(downloads[0]) == sizes[downloads[0]]  # its size is kept
        gets = emulator.requests[GET]
        assert await read_all(store, downloads[0]) == body(emulator, downloads[0])
        assert emulator.requests[GET] == gets + 1
        assert emulator.requests[HEAD] == len(downloads)


def test_recent_writes_serve_only_what_they_hold_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(content, "_RECENT_LIMIT", 25)
    body = content._Body(1, -1, Extents(), 100)
    body.keep_recent(0, b"0123456789")
    body.keep_recent(10, b"abcdefghij")
    assert body.recent_bytes(5, 15) == b"56789abcde"
    assert body.recent_bytes(10, 20) == b"abcdefghij"
    assert body.recent_bytes(15, 25) is None  # not all of it
    body.keep_recent(40, b"KLMNOPQRST")  # over the limit: the oldest goes
    assert body.recent_bytes(0, 5) is None
    assert body.recent_bytes(12, 14) == b"cd"
    assert body.recent_bytes(45, 50) == b"PQRST"


async def test_an_open_file_is_never_evicted(
    emulator: Emulator, base_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(content, "_EVICTION_GRACE", 0.2)
    downloads, _, limit = over_the_bound(emulator)
    content_dir = tmp_path / "cache" / "content"
    async with open_store(emulator, base_url, tmp_path / "cache", max_bytes=limit) as store:
        store.hold(downloads[0])  # as fs.open does
        for download_id in downloads:
            assert await read_all(store, download_id) == body(emulator, download_id)
            await trio.sleep(content._EVICTION_GRACE + 0.1)
        assert (content_dir / str(downloads[0])).exists()  # the oldest, but open
        assert not (content_dir / str(downloads[1])).exists()  # the next oldest went
        store.release(downloads[0])
        assert await read_all(store, downloads[1]) == body(emulator, downloads[1])
        await trio.sleep(content._EVICTION_GRACE + 0.1)
        assert await read_all(store, downloads[2]) == body(emulator, downloads[2])
    assert not (content_dir / str(downloads[0])).exists()  # closed: it may go now


async def test_the_content_directory_is_private_even_if_it_existed(
    emulator: Emulator, base_url: str, tmp_path: Path
) -> None:
    loose = tmp_path / "cache" / "content"
    loose.mkdir(parents=True, mode=0o777)
    loose.chmod(0o777)
    async with open_store(emulator, base_url, tmp_path / "cache"):
        assert loose.stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize("direct", [True, False])
def test_the_disk_writer_puts_every_piece_where_it_belongs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, direct: bool
) -> None:
    """Direct writes where O_DIRECT exists, else through the page cache. Unaligned starts,
    pieces of any size, held-back ends, a final write."""
    if not direct:
        monkeypatch.delattr(os, "O_DIRECT")
    path = tmp_path / "body.part"
    rng = random.Random(7)
    payload = rng.randbytes(9 * 2**20 + 123)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        writer = content._DiskWriter(os.fspath(path), fd)
        assert (writer._direct is not None) == direct
        position = 1000  # an unaligned start, as a ranged fetch has
        held = b""
        while position < len(payload):
            sizes = [rng.randrange(1, 700_000) for _ in range(rng.randrange(1, 5))]
            pieces, at = [held], position + len(held)
            for size in sizes:
                pieces.append(payload[at : at + size])
                at += size
            final = at >= len(payload)
            written = writer.write(pieces, position, final)
            assert written <= sum(map(len, pieces))
            assert final or not direct or (position + written) % 4096 == 0
            held = content._tail(pieces, sum(map(len, pieces)) - written)
            position += written
            if final:
                assert not held
        writer.close()
        assert os.pread(fd, len(payload), 0)[1000:] == payload[1000:]
    finally:
        os.close(fd)


# -- sizes of a directory ---------------------------------------------------------------------


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
    gets at most ``_CONCURRENT_PROBES`` requests at once, each size probed once."""
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
    assert 1 < emulator.peak_connections <= content._CONCURRENT_PROBES
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
    assert len(expected) < emulator.requests[HEAD] <= len(expected) + content._CONCURRENT_PROBES
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
    assert emulator.requests[HEAD] <= content._CONCURRENT_PROBES
    assert emulator.requests[GET] == len(expected)
    assert emulator.bytes_sent <= len(expected)

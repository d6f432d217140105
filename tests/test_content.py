"""The content store over real HTTP on loopback: streaming, one transfer, resume, sizes."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import trio

from mkwfs.api import ApiClient, Credentials, RetryPolicy
from mkwfs.content import ContentStore
from mkwfs.emulator import BIG_ZIP, DEMO_BUILD, Emulator, EmulatorConfig, serve_in_thread
from mkwfs.errors import ApiError

GET = "GET /api/v1/downloads/:id"
HEAD = "HEAD /api/v1/downloads/:id"
SIZE = 4 * 2**20


@pytest.fixture
def emulator(tmp_path: Path) -> Emulator:
    return Emulator(EmulatorConfig(big_file_size=SIZE, data_dir=tmp_path / "data"))


@pytest.fixture
def base_url(emulator: Emulator) -> Iterator[str]:
    with serve_in_thread(emulator) as url:
        yield url


@asynccontextmanager
async def open_store(emulator: Emulator, url: str, cache: Path) -> AsyncIterator[ContentStore]:
    async with httpx.AsyncClient() as http, trio.open_nursery() as nursery:
        api = ApiClient(http, url, Credentials(token=emulator.issue_token()), RetryPolicy(1))
        yield ContentStore(api, cache, nursery)
        nursery.cancel_scope.cancel()


def configure(emulator: Emulator, **changes: object) -> None:
    emulator.config = dataclasses.replace(emulator.config, **changes)  # type: ignore[arg-type]


async def read_all(store: ContentStore, download_id: int, chunk: int = 128 * 1024) -> bytes:
    parts = []
    offset = 0
    while data := await store.read(download_id, offset, chunk):
        parts.append(data)
        offset += len(data)
    return b"".join(parts)


def body(emulator: Emulator, download_id: int) -> bytes:
    return emulator.body_path(download_id).read_bytes()


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


async def test_a_dropped_transfer_fails_the_read_and_the_next_read_resumes(
    emulator: Emulator, base_url: str, tmp_path: Path
) -> None:
    expected = body(emulator, BIG_ZIP)
    configure(emulator, drop_after=SIZE // 2)
    async with open_store(emulator, base_url, tmp_path / "cache") as store:
        with trio.fail_after(10), pytest.raises(ApiError):
            await store.read(BIG_ZIP, SIZE - 4096, 4096)
        configure(emulator, drop_after=None)
        sent_before = emulator.bytes_sent
        with trio.fail_after(10):
            assert await read_all(store, BIG_ZIP) == expected
    assert emulator.requests[GET] == 2
    # The second transfer asked only for what was missing.
    assert emulator.bytes_sent - sent_before <= len(expected) - SIZE // 4


async def test_without_range_support_a_resume_starts_over_and_stays_correct(
    emulator: Emulator, base_url: str, tmp_path: Path
) -> None:
    expected = body(emulator, BIG_ZIP)
    configure(emulator, drop_after=SIZE // 2, ranges=False)
    async with open_store(emulator, base_url, tmp_path / "cache") as store:
        with trio.fail_after(10), pytest.raises(ApiError):
            await store.read(BIG_ZIP, SIZE - 4096, 4096)
        configure(emulator, drop_after=None)
        with trio.fail_after(10):
            assert hashlib.sha256(await read_all(store, BIG_ZIP)).digest() == (
                hashlib.sha256(expected).digest()
            )


async def test_a_partial_body_left_by_a_crash_is_resumed(
    emulator: Emulator, base_url: str, tmp_path: Path
) -> None:
    expected = body(emulator, BIG_ZIP)
    content = tmp_path / "cache" / "content"
    content.mkdir(parents=True)
    (content / f"{BIG_ZIP}.part").write_bytes(expected[:1000])
    async with open_store(emulator, base_url, tmp_path / "cache") as store:
        assert await read_all(store, BIG_ZIP) == expected
    assert emulator.bytes_sent == len(expected) - 1000


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

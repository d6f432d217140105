"""What the content tests share: a store over real HTTP on loopback, and ways to read it."""

from __future__ import annotations

import io
import zipfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from mkwfs.content.store import ContentStore, open_content_store
from mkwfs.emulator import DEMO_BUILD, Emulator
from mkwfs.remote.api import ApiClient, Credentials, RetryPolicy
from mkwfs.remote.client import open_http_client

GET = "GET /api/v1/downloads/:id"
HEAD = "HEAD /api/v1/downloads/:id"
SIZE = 4 * 2**20


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

"""The store as a whole: a member of a cold ZIP costs its bytes and few requests."""

from __future__ import annotations

import zipfile
from pathlib import Path

import trio

from mkwfs.emulator import BIG_ZIP, Emulator
from tests.content.support import (
    GET,
    SIZE,
    open_store,
    read_member,
)


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

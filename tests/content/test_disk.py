"""The disk store: what a crash left is trusted only as far as its map says; a private
directory."""

from __future__ import annotations

import json
from pathlib import Path

from mkwfs.emulator import BIG_ZIP, Emulator
from tests.content.support import (
    body,
    open_store,
    read_all,
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


async def test_the_content_directory_is_private_even_if_it_existed(
    emulator: Emulator, base_url: str, tmp_path: Path
) -> None:
    loose = tmp_path / "cache" / "content"
    loose.mkdir(parents=True, mode=0o777)
    loose.chmod(0o777)
    async with open_store(emulator, base_url, tmp_path / "cache"):
        assert loose.stat().st_mode & 0o777 == 0o700

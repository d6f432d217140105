"""A sequential reader never loses its stream: one GET per cold read, however far the disk
writer lags the bytes that arrived (issue 16). The disk is slowed (``disk_write_rate``) below
the pace of the body (the emulator's ``throttle``), so the bytes in memory run megabytes
ahead of those on disk, as with a bursty server; each case runs many times, cold, so that a
split that happens one time in three shows."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from mkwfs.content.body import Fetch
from mkwfs.content.config import ContentConfig
from mkwfs.content.store import ContentStore
from mkwfs.emulator import BIG_ZIP, Emulator, EmulatorConfig, serve_in_thread
from tests.content.support import GET, open_store, read_all

MiB = 1 << 20
#: Big enough for the readahead (16 MiB) and the recent bytes (24 MiB) to turn over.
BIG = 64 * MiB
#: The disk writes at a quarter of the body's pace: it lags by whatever the queue holds.
LAGGING = ContentConfig(disk_write_rate=160 * MiB)
PACE = 640 * MiB
REPEATS = 10


@pytest.fixture(scope="module")
def big_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Emulator, str]]:
    """An emulator whose BIG_ZIP is ``BIG`` bytes, made once for the module."""
    data = tmp_path_factory.mktemp("sequential") / "data"
    emulator = Emulator(EmulatorConfig(big_file_size=BIG, data_dir=data, throttle=PACE))
    with serve_in_thread(emulator) as url:
        yield emulator, url


async def cold_read(emulator: Emulator, url: str, cache: Path) -> tuple[str, int]:
    """The digest of one cold sequential read of BIG_ZIP, 128 KiB at a time as FUSE asks,
    and the GETs it cost."""
    emulator.reset_counters()
    async with open_store(emulator, url, cache, config=LAGGING) as store:
        with trio.fail_after(60):
            data = await read_all(store, BIG_ZIP)
    return hashlib.sha256(data).hexdigest(), emulator.requests[GET]


async def test_a_cold_sequential_read_is_one_get_every_time(
    big_server: tuple[Emulator, str], tmp_path: Path
) -> None:
    emulator, url = big_server
    expected = emulator.body_sha256(BIG_ZIP)
    gets = []
    for attempt in range(REPEATS):
        digest, count = await cold_read(emulator, url, tmp_path / f"cache{attempt}")
        assert digest == expected
        gets.append(count)
    print("GETs per cold sequential read:", gets)
    assert gets == [1] * REPEATS


async def test_a_cold_read_of_a_bursty_stream_is_one_get_every_time(
    big_server: tuple[Emulator, str], tmp_path: Path
) -> None:
    """Express streams in bursts (the emulator's ``burst_bytes``/``burst_pause``): the
    pauses and the lagging disk together must not split the stream either."""
    emulator, url = big_server
    expected = emulator.body_sha256(BIG_ZIP)
    paced = emulator.config
    emulator.config = dataclasses.replace(paced, burst_bytes=4 * MiB, burst_pause=0.02)
    try:
        gets = []
        for attempt in range(REPEATS):
            digest, count = await cold_read(emulator, url, tmp_path / f"cache{attempt}")
            assert digest == expected
            gets.append(count)
    finally:
        emulator.config = paced
    print("GETs per cold sequential read of a bursty stream:", gets)
    assert gets == [1] * REPEATS


async def sequential_reader(store: ContentStore, offset: int, chunk: int = 128 * 1024) -> bytes:
    parts = []
    while data := await store.read(BIG_ZIP, offset, chunk):
        parts.append(data)
        offset += len(data)
    return b"".join(parts)


async def read_from_offsets(store: ContentStore, starts: list[int]) -> dict[int, bytes]:
    """Once the stream runs (a read at 0 started it), a sequential reader from each start."""
    await store.read(BIG_ZIP, 0, 128 * 1024)
    results: dict[int, bytes] = {}

    async def reader(offset: int) -> None:
        results[offset] = await sequential_reader(store, offset)

    async with trio.open_nursery() as nursery:
        for offset in starts:
            nursery.start_soon(reader, offset)
    return results


async def test_readers_at_several_offsets_share_the_stream(
    big_server: tuple[Emulator, str], tmp_path: Path
) -> None:
    """Readers that start a few megabytes into the stream (as several readers, or the
    kernel's readahead, do) join it, and stay with it to the end."""
    emulator, url = big_server
    expected = emulator.body_path(BIG_ZIP).read_bytes()
    starts = [0, 1 * MiB, 2 * MiB, 3 * MiB]
    gets = []
    for attempt in range(REPEATS // 2):
        emulator.reset_counters()
        cache = tmp_path / f"cache{attempt}"
        async with open_store(emulator, url, cache, config=LAGGING) as store:
            with trio.fail_after(60):
                results = await read_from_offsets(store, starts)
        assert all(results[offset] == expected[offset:] for offset in starts)
        gets.append(emulator.requests[GET])
    print("GETs with readers at", starts, ":", gets)
    assert gets == [1] * (REPEATS // 2)


@pytest.mark.parametrize("config", [LAGGING, ContentConfig()], ids=["lagging", "fast"])
async def test_the_stream_runs_on_through_a_few_bytes_another_reader_put_on_disk(
    big_server: tuple[Emulator, str], tmp_path: Path, config: ContentConfig
) -> None:
    """A reader in the middle put a few megabytes on disk, in windows; the stream that
    reaches them later runs on through them rather than end there (the reader behind it
    would then need a GET for what follows, and more as its windows grow)."""
    emulator, url = big_server
    expected = emulator.body_path(BIG_ZIP).read_bytes()
    gets = []
    for attempt in range(REPEATS // 2):
        emulator.reset_counters()
        cache = tmp_path / f"cache{attempt}"
        async with open_store(emulator, url, cache, config=config) as store:
            with trio.fail_after(60):
                middle = BIG // 3
                assert await store.read(BIG_ZIP, middle, 4 * MiB) == expected[middle:][: 4 * MiB]
                windows = emulator.requests[GET]
                assert await read_all(store, BIG_ZIP) == expected
        gets.append(emulator.requests[GET] - windows)
    print("GETs of a sequential read past a reader's windows:", gets)
    assert gets == [1] * (REPEATS // 2)


def test_a_fetch_serves_the_front_of_what_arrived_however_far_the_disk_lags() -> None:
    join = ContentConfig().join_distance
    fetch = Fetch(0, None)
    fetch.position, fetch.arrived = 1 * MiB, 40 * MiB  # the disk lags by 39 MiB
    assert fetch.serves(40 * MiB, join)  # the next byte to come
    assert fetch.serves(40 * MiB + join, join)  # a little further on
    assert fetch.serves(20 * MiB, join)  # arrived, on its way to the disk
    assert not fetch.serves(40 * MiB + join + 1, join)  # a random read further on
    window = Fetch(10 * MiB, 11 * MiB)
    assert window.serves(10 * MiB + 4096, join)
    assert not window.serves(11 * MiB, join)  # past its end
    assert not window.serves(9 * MiB, join)  # before its start
    window.done = True
    assert not window.serves(10 * MiB + 4096, join)
    # A stream that runs through bytes on disk reaches past them soon: a reader that read
    # them from disk faster than the stream came still counts as behind it.
    stream = Fetch(0, None)
    stream.arrived = 20 * MiB
    assert not stream.serves(30 * MiB, join)
    assert stream.serves(30 * MiB, join, front=28 * MiB)


def test_the_setup_lags(big_server: tuple[Emulator, str]) -> None:
    """The disk is slower than the body, by a margin: otherwise the cases above prove
    nothing."""
    emulator, _ = big_server
    assert emulator.config.throttle is not None and LAGGING.disk_write_rate is not None
    assert emulator.config.throttle >= 2 * LAGGING.disk_write_rate

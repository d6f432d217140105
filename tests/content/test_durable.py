"""The durability rule of complete bodies (content/durable.py): the same boot trusts every
body under its final name; after a reboot only what the journal proves synced is kept."""

from __future__ import annotations

import os
from pathlib import Path

import trio

from mkwfs.content.config import ContentConfig
from mkwfs.content.durable import Durability, identity
from mkwfs.emulator import LARGE_BUILD, Emulator
from tests.content.support import GET, body, open_store, read_all


def cache_with(tmp_path: Path, names: dict[str, bytes]) -> Path:
    directory = tmp_path / "content"
    directory.mkdir()
    for name, data in names.items():
        (directory / name).write_bytes(data)
    return directory


def boot(tmp_path: Path, boot_id: str) -> str:
    path = tmp_path / "boot_id"
    path.write_text(f"{boot_id}\n")
    return os.fspath(path)


def synced(directory: Path, *download_ids: int) -> None:
    """What the store does after a batch sync."""
    durability = Durability(os.fspath(directory))
    durability.note_synced([(i, identity((directory / str(i)).stat())) for i in download_ids])


def test_a_cache_without_a_boot_id_is_trusted_whole(tmp_path: Path) -> None:
    # Written by a version that synced every body before its rename.
    directory = cache_with(tmp_path, {"1": b"a" * 10, "2": b"b", "3.part": b"", "4.new": b"x"})
    found = Durability(os.fspath(directory), boot(tmp_path, "A")).recover()
    assert found.complete == {1: 10, 2: 1}
    assert found.partial == {3}
    assert found.dropped == []
    assert not (directory / "4.new").exists()  # half written by a killed daemon
    assert (directory / "boot").read_text() == "A"


def test_the_same_boot_trusts_every_body_under_its_final_name(tmp_path: Path) -> None:
    directory = cache_with(tmp_path, {})
    Durability(os.fspath(directory), boot(tmp_path, "A")).recover()
    (directory / "1").write_bytes(b"never synced")
    found = Durability(os.fspath(directory), boot(tmp_path, "A")).recover()
    assert found.complete == {1: 12}
    assert (directory / "1").exists()


def test_after_a_reboot_only_synced_bodies_are_kept(tmp_path: Path) -> None:
    directory = cache_with(tmp_path, {})
    Durability(os.fspath(directory), boot(tmp_path, "A")).recover()
    for download_id in (1, 2, 3):
        (directory / str(download_id)).write_bytes(b"x" * download_id)
    synced(directory, 1, 2)
    # Body 2 evicted and fetched again after the sync: a new file, never synced.
    (directory / "2").unlink()
    (directory / "2.new").write_bytes(b"yy")
    os.utime(directory / "2.new", ns=(1, 1))  # another modification time, surely
    (directory / "2.new").rename(directory / "2")

    found = Durability(os.fspath(directory), boot(tmp_path, "B")).recover()
    assert found.complete == {1: 1}
    assert sorted(found.dropped) == [2, 3]
    assert sorted(os.listdir(directory)) == ["1", "boot", "durable"]
    assert (directory / "boot").read_text() == "B"
    # The journal now names what was kept, and the next start under B trusts all.
    assert (directory / "durable").read_text().split()[0] == "1"
    (directory / "5").write_bytes(b"under B")
    assert Durability(os.fspath(directory), boot(tmp_path, "B")).recover().complete == {1: 1, 5: 7}


def test_a_body_cut_short_by_a_crash_is_not_trusted(tmp_path: Path) -> None:
    directory = cache_with(tmp_path, {})
    Durability(os.fspath(directory), boot(tmp_path, "A")).recover()
    (directory / "1").write_bytes(b"0123456789")
    synced(directory, 1)
    with open(directory / "1", "r+b") as file:  # what a crash might leave of a later write
        file.truncate(4)
    found = Durability(os.fspath(directory), boot(tmp_path, "B")).recover()
    assert found.complete == {}
    assert found.dropped == [1]


async def test_a_store_after_a_reboot_fetches_again_what_was_not_synced(
    emulator: Emulator, base_url: str, tmp_path: Path
) -> None:
    ids = [d["id"] for d in emulator.downloads_of(LARGE_BUILD)[:6]]
    cache = tmp_path / "cache"
    unsynced = ContentConfig(sync_delay=3600.0, boot_id_file=boot(tmp_path, "A"))
    async with open_store(emulator, base_url, cache, config=unsynced) as store:
        with trio.fail_after(30):
            for download_id in ids[:3]:
                await store.size(download_id)
                assert await read_all(store, download_id) == body(emulator, download_id)
            await store.stop_fetches()
            await store._disk.sync()  # these three are synced and noted
            for download_id in ids[3:]:
                await store.size(download_id)
                assert await read_all(store, download_id) == body(emulator, download_id)
            await store.stop_fetches()
            # Played crash: the daemon dies before its close syncs the other three.
            store._disk._unsynced.clear()
    assert emulator.requests[GET] == 6

    emulator.reset_counters()
    rebooted = ContentConfig(boot_id_file=boot(tmp_path, "B"))
    async with open_store(emulator, base_url, cache, config=rebooted) as store:
        with trio.fail_after(30):
            for download_id in ids:
                await store.size(download_id)
                assert await read_all(store, download_id) == body(emulator, download_id)
    assert emulator.requests[GET] == 3  # the three never synced

"""The SQLite fact store on its own and under the catalog: facts with their times and
validators survive a reopen (a remount), a 304 renews only the time, a corrupt or foreign
file is set aside and made again, and a catalog over it revalidates what an earlier mount
kept (the emulator's ETags and 304s) and starts offline from it when the server is down."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import pytest
import trio

from mkwfs.catalog import codecs
from mkwfs.catalog.listings import Catalog
from mkwfs.catalog.sqlite import FILE_NAME, SCHEMA_VERSION, SqliteStore, open_sqlite_store
from mkwfs.catalog.store import Codec, FactStore, FactTable, Fetched
from mkwfs.emulator import BUILDING_BUILD, DEMO_BUILD, LARGE_BUILD, Emulator
from mkwfs.remote.errors import TransportError
from mkwfs.remote.validators import Validator
from tests.helpers import open_api

NUMBERS: Codec[str, list[int]] = Codec(
    lambda key: key, lambda value: json.dumps(value).encode(), lambda data: json.loads(data)
)
ETAG = Validator('W/"a-1"', "Tue, 01 Dec 2026 10:00:00 GMT")


def numbers(store: FactStore) -> FactTable[str, list[int]]:
    return store.table("numbers", maxsize=2, codec=NUMBERS)


async def test_facts_survive_a_reopen_with_time_and_validator(tmp_path: Path) -> None:
    async with open_sqlite_store(tmp_path) as store:
        assert isinstance(store, SqliteStore)
        table = numbers(store)
        table.put("a", Fetched([1, 2], 10.0, ETAG))
        table.put("b", Fetched([3], 11.0))
        table.put("c", Fetched([4], 12.0))  # "a" leaves memory, not the disk
        assert table.get("a") == Fetched([1, 2], 10.0, ETAG)
    async with open_sqlite_store(tmp_path) as store:
        table = numbers(store)
        assert table.get("a") == Fetched([1, 2], 10.0, ETAG)
        assert table.get("b") == Fetched([3], 11.0) and table.get("c") == Fetched([4], 12.0)
        assert table.get("d") is None
        assert store.table("other", maxsize=1, codec=NUMBERS).get("a") is None
    db = sqlite3.connect(tmp_path / FILE_NAME)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


async def test_each_servers_facts_are_its_own(tmp_path: Path) -> None:
    async with open_sqlite_store(tmp_path, "http://a.test") as store:
        numbers(store).put("k", Fetched([1], 10.0))
    async with open_sqlite_store(tmp_path, "http://b.test") as store:
        assert numbers(store).get("k") is None
        numbers(store).put("k", Fetched([2], 11.0))
    async with open_sqlite_store(tmp_path, "http://a.test") as store:
        assert numbers(store).get("k") == Fetched([1], 10.0)


async def test_a_renewal_writes_the_new_time_only(tmp_path: Path) -> None:
    async with open_sqlite_store(tmp_path) as store:
        numbers(store).put("a", Fetched([1], 10.0, ETAG))
    async with open_sqlite_store(tmp_path) as store:
        assert numbers(store).renew("a", 20.0) == Fetched([1], 20.0, ETAG)
        assert numbers(store).renew("zz", 20.0) is None
    async with open_sqlite_store(tmp_path) as store:
        assert numbers(store).get("a") == Fetched([1], 20.0, ETAG)


async def test_writes_go_to_disk_in_the_background(tmp_path: Path) -> None:
    async with open_sqlite_store(tmp_path) as store:
        numbers(store).put("a", Fetched([1], 10.0))
        db = sqlite3.connect(tmp_path / FILE_NAME)
        with trio.fail_after(10):
            while db.execute("SELECT count(*) FROM facts").fetchone()[0] == 0:  # noqa: ASYNC110
                await trio.sleep(0.05)
        db.close()


@pytest.mark.parametrize("kind", ["garbage", "foreign", "newer", "same version, other facts"])
async def test_a_file_that_is_not_the_catalog_is_set_aside_and_made_again(
    tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / FILE_NAME
    if kind == "garbage":
        path.write_bytes(b"this is not SQLite at all\n" * 400)
    else:
        db = sqlite3.connect(path)
        db.execute("CREATE TABLE notes (text TEXT)")
        if kind != "foreign":
            db.execute("CREATE TABLE facts (x)")
            version = SCHEMA_VERSION + 1 if kind == "newer" else SCHEMA_VERSION
            db.execute(f"PRAGMA user_version = {version}")
        db.commit()
        db.close()
    before = path.read_bytes()
    with caplog.at_level(logging.WARNING):
        async with open_sqlite_store(tmp_path) as store:
            assert isinstance(store, SqliteStore)
            numbers(store).put("a", Fetched([1], 10.0))
    (aside,) = tmp_path.glob(f"{FILE_NAME}.broken-*")  # noqa: ASYNC240
    assert aside.read_bytes() == before
    assert "not a usable catalog database" in caplog.text and aside.name in caplog.text
    async with open_sqlite_store(tmp_path) as store:
        assert numbers(store).get("a") == Fetched([1], 10.0)


async def test_an_unreadable_value_is_a_miss(tmp_path: Path) -> None:
    async with open_sqlite_store(tmp_path) as store:
        numbers(store).put("a", Fetched([1], 10.0))
    db = sqlite3.connect(tmp_path / FILE_NAME)
    db.execute("UPDATE facts SET value = ?", (b"{cut",))
    db.commit()
    db.close()
    async with open_sqlite_store(tmp_path) as store:
        assert numbers(store).get("a") is None


async def test_the_catalogs_codecs_give_back_what_the_server_sent(
    tmp_path: Path, emulator: Emulator
) -> None:
    async with open_catalog(emulator, tmp_path) as catalog:
        builds = await catalog.builds()
        files = await catalog.downloads(builds[DEMO_BUILD])
        projects = await catalog.groups("project")
        group = await catalog.group_builds("project", 402)
        record = await catalog.record(builds[DEMO_BUILD])
    async with open_sqlite_store(tmp_path) as store:
        assert store.table("builds", maxsize=1, codec=codecs.BUILDS_BY_ID).get(None) is not None
    async with open_catalog(emulator, tmp_path) as catalog:
        emulator.config = replace(emulator.config, down=True)
        await catalog.start()
        assert offline(catalog)
        again = await catalog.builds()
        assert again.keys() == builds.keys()
        assert [b.raw for b in again.values()] == [b.raw for b in builds.values()]
        assert [d.raw for d in await catalog.downloads(again[DEMO_BUILD])] == [d.raw for d in files]
        assert await catalog.groups("project") == projects
        assert (await catalog.group_builds("project", 402)).keys() == group.keys()
        assert (await catalog.record(again[DEMO_BUILD])).raw == record.raw


def offline(catalog: Catalog) -> bool:
    return catalog.staleness.offline


@asynccontextmanager
async def open_catalog(emulator: Emulator, cache_dir: Path) -> AsyncIterator[Catalog]:
    """A catalog over the SQLite store in ``cache_dir`` (dir_ttl 10 s), as a mount has."""
    async with open_api(emulator) as api, open_sqlite_store(cache_dir) as store:
        yield Catalog(
            api, dir_ttl=10.0, final_ttl=86400.0, live_ttl=2.0, timeout=5.0,
            id_limit=1 << 40, store=store,
        )  # fmt: skip


@pytest.mark.parametrize(("embedded", "requests"), [(True, 1), (False, 2)])
async def test_a_remount_revalidates_with_304s(
    tmp_path: Path, emulator: Emulator, embedded: bool, requests: int
) -> None:
    """The list of builds, and a build's list where its object does not carry its files;
    besides, `start`'s check asks for a page of no builds."""
    emulator.config = replace(emulator.config, etags=True, embed_downloads=embedded)
    async with open_catalog(emulator, tmp_path) as catalog:
        await catalog.start()
        await catalog.downloads((await catalog.builds())[DEMO_BUILD])
    emulator.reset_counters()
    async with open_catalog(emulator, tmp_path) as catalog:
        await catalog.start()
        builds = await catalog.builds()
        assert len(await catalog.downloads(builds[DEMO_BUILD])) == 4
    assert emulator.stats.not_modified == requests
    assert sum(emulator.requests.values()) == requests + 1


async def test_offline_serves_what_is_kept_and_goes_online_at_the_first_answer(
    tmp_path: Path, emulator: Emulator
) -> None:
    # Builds without their files, so that a listing not seen before needs the server.
    emulator.config = replace(emulator.config, embed_downloads=False)
    async with open_catalog(emulator, tmp_path) as catalog:
        await catalog.start()
        await catalog.downloads((await catalog.builds())[DEMO_BUILD])
    emulator.config = replace(emulator.config, down=True)
    async with open_catalog(emulator, tmp_path) as catalog:
        with trio.fail_after(2):
            await catalog.start()
        assert offline(catalog)
        builds = await catalog.builds()
        assert DEMO_BUILD in builds
        assert len(await catalog.downloads(builds[DEMO_BUILD])) == 4
        with pytest.raises(TransportError, match="offline"):
            await catalog.downloads(builds[LARGE_BUILD])
        with pytest.raises(TransportError):
            await catalog.check()
        assert offline(catalog)
        emulator.config = replace(emulator.config, down=False)
        emulator.finish_build(BUILDING_BUILD)
        await catalog.check()
        assert not offline(catalog)
        assert len(await catalog.downloads(builds[LARGE_BUILD])) == 1000
        assert (await catalog.builds())[BUILDING_BUILD].status == "FINISHED"


async def test_offline_every_finished_build_carries_its_files(
    tmp_path: Path, emulator: Emulator
) -> None:
    """Build objects that carry their downloads: one list of builds seen is enough for every
    finished build's files offline, though no build was opened before."""
    async with open_catalog(emulator, tmp_path) as catalog:
        await catalog.start()
    emulator.config = replace(emulator.config, down=True)
    async with open_catalog(emulator, tmp_path) as catalog:
        with trio.fail_after(2):
            await catalog.start()
        assert offline(catalog)
        builds = await catalog.builds()
        assert len(await catalog.downloads(builds[LARGE_BUILD])) == 1000
        with pytest.raises(TransportError, match="offline"):  # still running: asked
            await catalog.downloads(builds[BUILDING_BUILD])


async def test_without_a_kept_list_a_server_out_of_reach_is_an_error(
    tmp_path: Path, emulator: Emulator
) -> None:
    emulator.config = replace(emulator.config, down=True)
    async with open_catalog(emulator, tmp_path) as catalog:
        with trio.fail_after(2), pytest.raises(TransportError):
            await catalog.start()
        assert not offline(catalog)

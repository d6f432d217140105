"""The catalog on its own, against the real emulator through ``httpx.MockTransport``: what
each fact costs, how long it is kept by build state, stale-if-error, and the fact store
behind the last good copies. TTLs pass on a ``MockClock`` that only moves when told."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Hashable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import pytest
import trio
import trio.testing

from mkwfs.catalog.listings import Catalog, belongs_to
from mkwfs.catalog.stale import STALE_RETRY
from mkwfs.catalog.store import Codec, FactStore, FactTable, Fetched, MemoryStore
from mkwfs.emulator import (
    AWKWARD_BUILD,
    BIG_BUILD,
    BUILDING_BUILD,
    DEMO_BUILD,
    FAILED_BUILD,
    LARGE_BUILD,
    Emulator,
)
from mkwfs.remote.errors import NotFound, TransportError
from mkwfs.remote.models import Build, parse_build
from tests.helpers import configure, open_api

LIST = "GET /api/v1/downloads"
BUILDS = "GET /api/v1/builds"
BUILD = "GET /api/v1/builds/:id"


@asynccontextmanager
async def open_catalog(
    emulator: Emulator,
    *,
    seconds: float = 15.0,
    store: FactStore | None = None,
    wall: Callable[[], float] = time.time,
) -> AsyncIterator[Catalog]:
    """A catalog with dir_ttl 10 s, live_ttl 2 s and final_ttl a day."""
    async with open_api(emulator) as api:
        yield Catalog(
            api,
            dir_ttl=10.0,
            final_ttl=86400.0,
            live_ttl=2.0,
            timeout=seconds,
            id_limit=1 << 40,
            store=store,
            wall=wall,
        )


async def build(catalog: Catalog, build_id: int) -> Build:
    return (await catalog.builds())[build_id]


async def test_the_builds_cost_one_request_and_give_every_record(emulator: Emulator) -> None:
    async with open_catalog(emulator) as catalog:
        builds = await catalog.builds()
        assert sorted(builds) == sorted(b["id"] for b in emulator.builds)
        assert await catalog.builds() is builds
        demo = builds[DEMO_BUILD]
        # A list of builds gives each build's record: no GET /builds/:id for it.
        assert catalog.cached_record(DEMO_BUILD) == demo
        assert catalog.fresh_build(demo) == demo
        assert await catalog.record(demo) == demo
    assert emulator.requests[BUILDS] == 1
    assert emulator.requests[BUILD] == 0


async def test_ids_from_the_limit_on_are_left_out(emulator: Emulator) -> None:
    async with open_api(emulator) as api:
        catalog = Catalog(
            api, dir_ttl=10, final_ttl=10, live_ttl=2, timeout=15, id_limit=DEMO_BUILD + 1
        )
        assert max(await catalog.builds()) == DEMO_BUILD


async def test_downloads_are_kept_by_the_state_of_their_build(
    emulator: Emulator, mock_clock: trio.testing.MockClock
) -> None:
    async with open_catalog(emulator) as catalog:
        finished = await build(catalog, DEMO_BUILD)
        running = await build(catalog, BUILDING_BUILD)
        got = await catalog.downloads(finished)
        assert [d.id for d in got] == [d["id"] for d in emulator.downloads_of(DEMO_BUILD)]
        await catalog.downloads(running)
        assert catalog.cached_downloads(DEMO_BUILD) is got
        # The finished build's object carries its downloads: only the running one is asked.
        assert emulator.requests[LIST] == 1
        mock_clock.jump(3.0)  # past live_ttl: only the running build's files are asked again
        assert catalog.cached_downloads(BUILDING_BUILD) is None
        await catalog.downloads(running)
        assert await catalog.downloads(finished) is got
        assert emulator.requests[LIST] == 2
        catalog.invalidate()
        assert [d.id for d in await catalog.downloads(finished)] == [d.id for d in got]
        await catalog.downloads(running)
        assert emulator.requests[LIST] == 3


async def test_a_finished_builds_embedded_downloads_spare_its_list_request(
    emulator: Emulator,
) -> None:
    """Real build objects carry their ``downloads``: a finished build's come from the list
    of builds; one whose object has no ``downloads`` (or unusable ones) is asked for them."""
    bare = next(b for b in emulator.builds if b["id"] == FAILED_BUILD)
    del bare["downloads"]
    broken = next(b for b in emulator.builds if b["id"] == AWKWARD_BUILD)
    broken["downloads"] = [*broken["downloads"], "not a download"]
    async with open_catalog(emulator) as catalog:
        builds = await catalog.builds()
        for build_id in (DEMO_BUILD, LARGE_BUILD, BIG_BUILD):
            files = await catalog.downloads(builds[build_id])
            assert [d.id for d in files] == [d["id"] for d in emulator.downloads_of(build_id)]
            assert [d.name for d in files] == [d["name"] for d in emulator.downloads_of(build_id)]
        assert emulator.requests[LIST] == 0
        files = await catalog.downloads(builds[FAILED_BUILD])
        assert [d.id for d in files] == [d["id"] for d in emulator.downloads_of(FAILED_BUILD)]
        assert emulator.requests[LIST] == 1
        files = await catalog.downloads(builds[AWKWARD_BUILD])
        assert [d.id for d in files] == [d["id"] for d in emulator.downloads_of(AWKWARD_BUILD)]
        assert emulator.requests[LIST] == 2
        assert emulator.requests[BUILDS] == 1


async def test_a_groups_builds_belong_to_it(emulator: Emulator) -> None:
    async with open_catalog(emulator) as catalog:
        projects = await catalog.groups("project")
        assert {p["name"] for p in projects} == {p["name"] for p in emulator.projects}
        builds = await catalog.group_builds("project", 402)
        assert sorted(builds) == sorted(b["id"] for b in emulator.builds if b["project_id"] == 402)
        assert all(belongs_to(b, "project", 402) for b in builds.values())
        assert catalog.cached_group_builds("project", 402) is builds
        patterns = await catalog.group_builds("pattern", 811)
        assert sorted(patterns) == sorted(b["id"] for b in emulator.builds if 811 in b["patterns"])


def test_membership_trusts_a_record_without_the_field() -> None:
    bare = parse_build({"id": 1, "status": "FINISHED"})
    assert belongs_to(bare, "project", 402) and belongs_to(bare, "pattern", 811)
    other = parse_build({"id": 2, "project_id": 7, "patterns": [1, 2]})
    assert not belongs_to(other, "project", 402) and belongs_to(other, "project", 7)
    assert not belongs_to(other, "pattern", 811) and belongs_to(other, "pattern", 2)


async def test_stale_if_error_serves_the_last_good_copy(
    emulator: Emulator, mock_clock: trio.testing.MockClock
) -> None:
    async with open_catalog(emulator) as catalog:
        running = await build(catalog, BUILDING_BUILD)
        files = await catalog.downloads(running)
        emulator.config = replace(emulator.config, down=True)
        mock_clock.jump(60)
        assert await catalog.downloads(running) == files
        assert catalog.staleness.active and catalog.staleness.served == 1
        asked = emulator.requests[LIST]
        assert await catalog.downloads(running) == files  # no new try for STALE_RETRY s
        assert emulator.requests[LIST] == asked
        emulator.config = replace(emulator.config, down=False)
        mock_clock.jump(STALE_RETRY + 1)
        await catalog.downloads(running)
        assert not catalog.staleness.active


async def test_the_servers_word_is_never_hidden(
    emulator: Emulator, mock_clock: trio.testing.MockClock
) -> None:
    async with open_catalog(emulator) as catalog:
        running = await build(catalog, BUILDING_BUILD)
        await catalog.downloads(running)
        mock_clock.jump(60)
        emulator.fail_next(LIST, 404)
        with pytest.raises(NotFound):
            await catalog.downloads(running)
        assert not catalog.staleness.active


async def test_a_request_is_bounded_by_the_timeout(emulator: Emulator) -> None:
    async with open_catalog(emulator, seconds=0.5) as catalog:
        emulator.config = replace(emulator.config, latency=30.0)
        started = trio.current_time()
        with trio.fail_after(5), pytest.raises(TransportError) as caught:
            await catalog.builds()
        assert 0.5 <= trio.current_time() - started < 2.0
        assert "no answer from the server within 0.5 s" in str(caught.value)


class _RecordingStore(FactStore):
    """Memory tables that also keep every fact put, by table name."""

    def __init__(self) -> None:
        self.memory = MemoryStore()
        self.puts: dict[str, list[tuple[Hashable, Fetched[Any]]]] = {}

    def table(
        self, name: str, *, maxsize: int, codec: Codec[Any, Any] | None = None
    ) -> FactTable[Any, Any]:
        inner: FactTable[Any, Any] = self.memory.table(name, maxsize=maxsize)
        puts = self.puts.setdefault(name, [])

        class Recording(FactTable[Any, Any]):
            def get(self, key: Any) -> Fetched[Any] | None:
                return inner.get(key)

            def put(self, key: Any, fact: Fetched[Any]) -> None:
                puts.append((key, fact))
                inner.put(key, fact)

        return Recording()


async def test_embedded_downloads_are_kept_with_the_list_of_builds(emulator: Emulator) -> None:
    """A finished build's files come from its object in the list of builds: the list's
    fact holds them (for a remount without the server), no list fact of their own."""
    store = _RecordingStore()
    async with open_catalog(emulator, store=store, wall=lambda: 1234.5) as catalog:
        demo = await build(catalog, DEMO_BUILD)
        files = await catalog.downloads(demo)
    assert store.puts["downloads"] == []
    ((_key, fact),) = store.puts["builds"]
    assert fact.value[DEMO_BUILD].embedded_downloads() == files


async def test_the_last_good_copies_go_to_the_store_with_their_fetch_time(
    emulator: Emulator,
) -> None:
    configure(emulator, embed_downloads=False)  # builds without their files: lists asked
    store = _RecordingStore()
    async with open_catalog(emulator, store=store, wall=lambda: 1234.5) as catalog:
        demo = await build(catalog, DEMO_BUILD)
        files = await catalog.downloads(demo)
    assert set(store.puts) == {"builds", "downloads", "records", "groups", "group_builds"}
    ((key, fact),) = store.puts["builds"]
    assert key is None and sorted(fact.value) == sorted(b["id"] for b in emulator.builds)
    assert store.puts["downloads"] == [(DEMO_BUILD, Fetched(files, 1234.5))]
    assert store.puts["records"] == []  # a list's records are kept in the list's fact
    async with open_catalog(emulator, store=store, wall=lambda: 1234.5) as catalog:
        record = await catalog.record(demo)
    assert store.puts["records"] == [(DEMO_BUILD, Fetched(record, 1234.5))]

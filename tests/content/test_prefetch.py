"""Whole bodies into the cache, a bounded number at a time (``content.prefetch``)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import trio

from mkwfs.content.prefetch import PrefetchProgress, Wanted, complete_on_disk, fetch_bodies
from mkwfs.emulator import DEMO_BUILD, Emulator
from tests.helpers import configure, open_content

GET = "GET /api/v1/downloads/:id"


async def test_bodies_are_fetched_once_and_failures_counted(
    emulator: Emulator, tmp_path: Path
) -> None:
    ids = [d["id"] for d in emulator.downloads_of(DEMO_BUILD)]
    configure(emulator, forbidden_downloads=frozenset({ids[2]}))
    wanted = [Wanted(f"file{i}", i) for i in ids]
    with trio.fail_after(20):
        async with open_content(emulator, tmp_path) as store:
            assert await complete_on_disk(tmp_path) == frozenset()
            first = PrefetchProgress()
            await fetch_bodies(store, wanted, at_once=2, complete=frozenset(), progress=first)
            for i in ids[:2] + ids[3:]:  # whole and right, from memory or disk
                size = store.known_size(i)
                assert size is not None
                data = await store.read(i, 0, size)
                assert hashlib.sha256(data).hexdigest() == emulator.body_sha256(i)
        assert emulator.requests[GET] == len(ids)
        sizes = {i: emulator.body_path(i).stat().st_size for i in ids}
        assert first.counts() == {
            "files": 4, "done": 4, "fetched": 3, "cached": 0, "failed": 1,
            "bytes": sum(sizes.values()) - sizes[ids[2]],
        }  # fmt: skip
        assert len(first.failures) == 1 and first.failures[0][0] == f"file{ids[2]}"

        # A new store on the same cache: what is complete costs no request.
        emulator.reset_counters()
        async with open_content(emulator, tmp_path) as store:
            complete = await complete_on_disk(tmp_path)
            assert complete == frozenset(ids) - {ids[2]}
            again = PrefetchProgress()
            ok = [w for w in wanted if w.download_id != ids[2]]
            await fetch_bodies(store, ok, at_once=4, complete=complete, progress=again)
        assert emulator.requests[GET] == 0
        assert (again.fetched, again.cached, again.failed) == (0, 3, 0)

"""Whole bodies into the cache, a bounded number at a time (``content.prefetch``)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import trio

from mkwfs.content.prefetch import PrefetchProgress, Wanted, fetch_bodies
from mkwfs.emulator import DEMO_BUILD, Emulator
from tests.helpers import configure, open_content

GET = "GET /api/v1/downloads/:id"
HEAD = "HEAD /api/v1/downloads/:id"


@pytest.mark.parametrize("probe_sizes", [False, True])
async def test_bodies_are_fetched_once_and_failures_counted(
    emulator: Emulator, tmp_path: Path, probe_sizes: bool
) -> None:
    """Each body one GET; with ``probe_sizes`` one HEAD each first (then small bodies come
    whole), without it none."""
    ids = [d["id"] for d in emulator.downloads_of(DEMO_BUILD)]
    configure(emulator, forbidden_downloads=frozenset({ids[2]}))
    wanted = [Wanted(f"file{i}", i) for i in ids]
    with trio.fail_after(20):
        async with open_content(emulator, tmp_path) as store:
            assert await store.complete_bodies() == frozenset()
            first = PrefetchProgress()
            await fetch_bodies(
                store,
                wanted,
                at_once=2,
                complete=frozenset(),
                progress=first,
                probe_sizes=probe_sizes,
            )
            for i in ids[:2] + ids[3:]:  # whole and right, from memory or disk
                size = store.known_size(i)
                assert size is not None
                data = await store.read(i, 0, size)
                assert hashlib.sha256(data).hexdigest() == emulator.body_sha256(i)
        assert emulator.requests[GET] == len(ids)
        assert emulator.requests[HEAD] == (len(ids) if probe_sizes else 0)
        sizes = {i: emulator.body_path(i).stat().st_size for i in ids}
        assert first.counts() == {
            "files": 4, "done": 4, "fetched": 3, "cached": 0, "failed": 1,
            "bytes": sum(sizes.values()) - sizes[ids[2]],
        }  # fmt: skip
        assert len(first.failures) == 1 and first.failures[0][0] == f"file{ids[2]}"

        # A new store on the same cache: what is complete costs no request.
        emulator.reset_counters()
        async with open_content(emulator, tmp_path) as store:
            complete = await store.complete_bodies()
            assert complete == frozenset(ids) - {ids[2]}
            again = PrefetchProgress()
            ok = [w for w in wanted if w.download_id != ids[2]]
            await fetch_bodies(
                store, ok, at_once=4, complete=complete, progress=again, probe_sizes=probe_sizes
            )
        assert emulator.requests[GET] == emulator.requests[HEAD] == 0
        assert (again.fetched, again.cached, again.failed) == (0, 3, 0)

"""Scan detection through the FUSE-free tree against the real emulator: ``ls -l`` seen
from its stats and readdirs, and the sizes probed ahead of it (``mkwfs.tree.scan``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import trio

from mkwfs.emulator import LARGE_BUILD, Emulator
from mkwfs.remote.errors import PermissionDenied
from mkwfs.tree import scan as scan_module
from mkwfs.tree.tree import (
    BUILD_JSON_NAME,
    FILE_BASE,
    Attributes,
    DirSnapshot,
    Tree,
    file_inode,
)
from tests.helpers import configure, open_tree
from tests.tree.helpers import build_dir, files

LIST = "GET /api/v1/downloads"
HEAD = "HEAD /api/v1/downloads/:id"
GET = "GET /api/v1/downloads/:id"


async def test_a_directory_scan_probes_sizes_concurrently_and_once(
    emulator: Emulator, tmp_path: Path
) -> None:
    configure(emulator, embed_downloads=False)  # builds without their files: lists asked

    async def probes_reach(count: int) -> None:
        with trio.fail_after(30):
            while emulator.requests[HEAD] < count:  # noqa: ASYNC110 (the emulator's counter)
                await trio.sleep(0.01)
            await trio.sleep(0.1)
        assert emulator.requests[HEAD] == count

    async with open_tree(emulator, tmp_path) as tree:
        build = await build_dir(tree, LARGE_BUILD)
        entries = await files(tree, build.ino)
        assert len(entries) == 1000
        # A single stat probes one size only.
        first = await tree.getattr(entries[0][1].ino)
        assert emulator.requests[HEAD] == 1
        # A second one soon after looks like `ls -l`: it and the next files (in name order,
        # as ls goes) are probed in the background, and only they.
        await tree.getattr(entries[1][1].ino)
        first_step, bound = scan_module.SCAN_FIRST, scan_module.SCAN_AHEAD
        horizon, given, step = 1 + first_step, first_step, min(2 * first_step, bound)
        await probes_reach(horizon)
        # Going on through the directory takes the probing on with it, ahead of the stats:
        # half way through what was probed last, twice as many files are, up to a bound.
        steps = []
        for position, (name, attrs) in enumerate(entries):
            stat = await tree.getattr(attrs.ino)
            if horizon < len(entries) and position >= horizon - given // 2:
                given = min(step, len(entries) - horizon)
                horizon, step = horizon + given, min(2 * step, bound)
                steps.append(given)
                await probes_reach(horizon)
            assert stat.size == emulator.body_path(attrs.ino - FILE_BASE).stat().st_size
            assert stat.attr_timeout > 0, name
        assert steps[:3] == [2 * first_step, 4 * first_step, bound]
    assert first.size > 0
    assert emulator.requests[HEAD] == 1000  # each size probed once
    assert emulator.requests[LIST] == 1


async def test_a_plain_readdir_probes_nothing_and_hands_out_few_unknown_sizes(
    emulator: Emulator, tmp_path: Path
) -> None:
    configure(emulator, embed_downloads=False)  # builds without their files: lists asked
    async with open_tree(emulator, tmp_path) as tree:
        build = await build_dir(tree, LARGE_BUILD)
        snapshot = await tree.snapshot(build.ino)
        handed: list[tuple[bytes, Attributes]] = []
        while len(handed) < len(snapshot.entries):
            batch = await tree.entries_from(snapshot, len(handed))
            unknown = [a for name, a in batch if name != BUILD_JSON_NAME]
            # A caller that stats them shows itself before the next are handed out.
            assert 0 < len(unknown) <= scan_module.READDIR_UNKNOWN
            assert all(a.attr_timeout == 0 for a in unknown)
            handed += batch
        assert handed == await tree.listdir(build.ino)
    assert emulator.requests[LIST] == 1
    assert emulator.requests[HEAD] == 0 and emulator.requests[GET] == 0


async def start_a_scan(tree: Tree) -> tuple[DirSnapshot, list[tuple[bytes, Attributes]]]:
    """Do what ls -l does first in the large build: read the first step of entries and stat
    them (the second stat of an unknown size shows a scan). The build directory's entries,
    and that first step."""
    build = await build_dir(tree, LARGE_BUILD)
    snapshot = await tree.snapshot(build.ino)
    first = await tree.entries_from(snapshot, 0)
    for _, attrs in first:
        await tree.getattr(attrs.ino)
    return snapshot, first


async def test_readdir_in_a_scan_hands_out_files_with_their_sizes(
    emulator: Emulator, tmp_path: Path
) -> None:
    configure(emulator, embed_downloads=False)  # builds without their files: lists asked
    async with open_tree(emulator, tmp_path) as tree:
        snapshot, first = await start_a_scan(tree)
        entries = snapshot.entries
        handed = list(first)
        with trio.fail_after(60):
            while len(handed) < len(entries):
                batch = await tree.entries_from(snapshot, len(handed))
                # At least a batch; all that is left once its sizes are known.
                assert len(batch) >= min(scan_module.READDIR_BATCH, len(entries) - len(handed))
                for name, attrs in batch:
                    true_size = emulator.body_path(attrs.ino - FILE_BASE).stat().st_size
                    assert attrs.size == true_size, name
                    assert attrs.attr_timeout > 0, name  # the kernel keeps it: no stat comes
                handed += batch
    assert [(n, a.ino) for n, a in handed] == [(n, node.ino) for n, node in entries]
    assert emulator.requests[HEAD] == 1000  # each size probed once
    assert emulator.requests[LIST] == 1


async def test_a_failed_probe_in_a_readdir_leaves_the_rest_to_stats(
    emulator: Emulator, tmp_path: Path
) -> None:
    downloads = emulator.downloads_of(LARGE_BUILD)
    refused = downloads[40]["id"]
    emulator.config = dataclasses.replace(emulator.config, forbidden_downloads=frozenset({refused}))
    async with open_tree(emulator, tmp_path) as tree:
        snapshot, first = await start_a_scan(tree)
        with trio.fail_after(30):
            batch = await tree.entries_from(snapshot, len(first))
            after = await tree.entries_from(snapshot, len(first) + len(batch))
        sizes = {a.ino: a for _, a in batch}
        assert sizes[file_inode(refused)].attr_timeout == 0
        assert sum(a.attr_timeout > 0 for a in sizes.values()) == len(batch) - 1
        # The readdir no longer waits for probes: the rest goes stat by stat...
        assert sum(a.attr_timeout == 0 for _, a in after) == scan_module.READDIR_UNKNOWN
        # ... and the stat of the refused file tells why.
        with pytest.raises(PermissionDenied):
            await tree.getattr(file_inode(refused))

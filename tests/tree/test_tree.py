"""The FUSE-free tree against the real emulator (through httpx.MockTransport)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from mkwfs.emulator import (
    AWKWARD_BUILD,
    BUILDING_BUILD,
    DEMO_BUILD,
    FORBIDDEN_BUILD,
    Emulator,
)
from mkwfs.remote.errors import (
    IsADirectory,
    NoSuchEntry,
    NotADirectory,
    PermissionDenied,
    ServerError,
)
from mkwfs.remote.models import parse_timestamp
from mkwfs.tree.tree import (
    BUILDS_INODE,
    FILE_BASE,
    ROOT_INODE,
    build_inode,
    file_inode,
)
from tests.helpers import configure, open_tree
from tests.tree.helpers import build_dir, files

LIST = "GET /api/v1/downloads"
BUILDS = "GET /api/v1/builds"
HEAD = "HEAD /api/v1/downloads/:id"
GET = "GET /api/v1/downloads/:id"


async def test_root_and_builds_list_every_build(emulator: Emulator, tmp_path: Path) -> None:
    async with open_tree(emulator, tmp_path) as tree:
        root = await tree.listdir(ROOT_INODE)
        assert [name for name, _ in root] == [b"builds", b"patterns", b"projects", b"unpacked"]
        builds = await tree.listdir(BUILDS_INODE)
        assert [name for name, _ in builds] == sorted(
            (str(b["id"]).encode() for b in emulator.builds), key=int
        )
        for name, attrs in builds:
            assert attrs.is_dir
            assert attrs.ino == build_inode(int(name))
    assert emulator.requests[BUILDS] == 1


async def test_listing_a_build_costs_one_request_and_no_size_probe(
    emulator: Emulator, tmp_path: Path
) -> None:
    configure(emulator, embed_downloads=False)  # builds without their files: lists asked
    async with open_tree(emulator, tmp_path) as tree:
        build = await build_dir(tree, DEMO_BUILD)
        entries = await files(tree, build.ino)
        again = await files(tree, build.ino)
    expected = sorted(d["name"].encode() for d in emulator.downloads_of(DEMO_BUILD))
    # In name order (not the ids' order here): ls -l stats in the order a scan probes.
    assert [name for name, _ in entries] == expected
    assert entries == again
    assert emulator.requests[LIST] == 1
    assert emulator.requests[HEAD] == 0 and emulator.requests[GET] == 0
    for _, attrs in entries:
        # Size unknown yet: 0 with a zero attribute timeout, so the kernel asks getattr.
        assert not attrs.is_dir and attrs.size == 0 and attrs.attr_timeout == 0


async def test_getattr_probes_the_true_size_once(emulator: Emulator, tmp_path: Path) -> None:
    download = emulator.downloads_of(DEMO_BUILD)[0]
    true_size = emulator.body_path(download["id"]).stat().st_size
    async with open_tree(emulator, tmp_path, attr_ttl=20.0) as tree:
        build = await build_dir(tree, DEMO_BUILD)
        entry = await tree.lookup(build.ino, download["name"].encode())
        assert entry.ino == file_inode(download["id"])
        attrs = await tree.getattr(entry.ino)
        assert attrs.size == true_size
        assert attrs.attr_timeout == 20.0
        assert (await tree.getattr(entry.ino)).size == true_size
        # Now known, listings carry the size too.
        listed = dict(await files(tree, build.ino))
        assert listed[download["name"].encode()].size == true_size
    assert emulator.requests[HEAD] == 1
    assert emulator.requests[GET] == 0


async def test_file_times_come_from_the_build(emulator: Emulator, tmp_path: Path) -> None:
    build_json = next(b for b in emulator.builds if b["id"] == DEMO_BUILD)
    async with open_tree(emulator, tmp_path) as tree:
        build = await build_dir(tree, DEMO_BUILD)
        (_, attrs), *_ = await files(tree, build.ino)
    assert build.mtime == attrs.mtime == parse_timestamp(build_json["build_end"])


async def test_missing_names_cost_no_request_within_the_ttl(
    emulator: Emulator, tmp_path: Path
) -> None:
    configure(emulator, embed_downloads=False)  # builds without their files: lists asked
    async with open_tree(emulator, tmp_path) as tree:
        build = await build_dir(tree, DEMO_BUILD)
        for _ in range(3):
            with pytest.raises(NoSuchEntry):
                await tree.lookup(build.ino, b"no-such-file.zip")
        for name in (b"999999", b"0123", b"abc", b"-1"):
            with pytest.raises(NoSuchEntry):
                await tree.lookup(BUILDS_INODE, name)
        with pytest.raises(NoSuchEntry):
            await tree.lookup(ROOT_INODE, b"no-such-top-level")
    assert emulator.requests[LIST] == 1
    assert emulator.requests[BUILDS] == 1


async def test_a_finished_builds_listing_is_kept_long_a_running_ones_briefly(
    emulator: Emulator, tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    configure(emulator, embed_downloads=False)  # builds without their files: lists asked
    async with open_tree(emulator, tmp_path, dir_ttl=10.0) as tree:
        assert tree.live_ttl == 5.0
        finished = await build_dir(tree, DEMO_BUILD)
        running = await build_dir(tree, BUILDING_BUILD)
        await files(tree, finished.ino)
        await files(tree, running.ino)
        assert emulator.requests[LIST] == 2
        mock_clock.jump(4.0)
        await files(tree, running.ino)
        assert emulator.requests[LIST] == 2
        mock_clock.jump(2.0)  # past live_ttl: the running build is asked again
        await files(tree, running.ino)
        assert emulator.requests[LIST] == 3
        mock_clock.jump(3600.0)  # far past dir_ttl: a finished build's files cannot change
        await files(tree, finished.ino)
        assert emulator.requests[LIST] == 3
        tree.invalidate()
        await files(tree, finished.ino)
        assert emulator.requests[LIST] == 4


async def test_refresh_of_one_path_drops_its_listing_only(
    emulator: Emulator, tmp_path: Path
) -> None:
    """``mkwfs refresh MOUNTPOINT PATH``: the listing of PATH (and below) is asked again, the
    others stay cached; the root (or no PATH) drops them all."""
    configure(emulator, embed_downloads=False)  # builds without their files: lists asked
    async with open_tree(emulator, tmp_path) as tree:
        demo = await build_dir(tree, DEMO_BUILD)
        running = await build_dir(tree, BUILDING_BUILD)
        first = (await files(tree, demo.ino))[0][1]
        await files(tree, running.ino)
        builds = emulator.requests[BUILDS]
        assert emulator.requests[LIST] == 2

        tree.invalidate(demo.ino)
        await files(tree, running.ino)
        assert emulator.requests[LIST] == 2  # the other build's files stay cached
        await files(tree, demo.ino)
        assert emulator.requests[LIST] == 3

        tree.invalidate(first.ino)  # a file: its build's listing
        await files(tree, running.ino)
        await files(tree, demo.ino)
        assert emulator.requests[LIST] == 4
        await tree.listdir(BUILDS_INODE)
        assert emulator.requests[BUILDS] == builds  # the list of builds stayed cached

        tree.invalidate(ROOT_INODE)
        await files(tree, running.ino)
        await files(tree, demo.ino)
        await tree.listdir(BUILDS_INODE)
        assert emulator.requests[LIST] == 6
        assert emulator.requests[BUILDS] == builds + 1


async def test_reading_twice_downloads_once(emulator: Emulator, tmp_path: Path) -> None:
    download = emulator.downloads_of(DEMO_BUILD)[-1]
    body = emulator.body_path(download["id"]).read_bytes()
    async with open_tree(emulator, tmp_path) as tree:
        build = await build_dir(tree, DEMO_BUILD)
        entry = await tree.lookup(build.ino, download["name"].encode())
        first = await tree.read(entry.ino, 0, len(body) + 100)
        middle = await tree.read(entry.ino, 10, 100)
        past_end = await tree.read(entry.ino, len(body), 100)
    assert first == body
    assert middle == body[10:110]
    assert past_end == b""
    assert emulator.requests[GET] == 1


async def test_a_fresh_tree_on_the_same_cache_does_not_download_again(
    emulator: Emulator, tmp_path: Path
) -> None:
    download = emulator.downloads_of(DEMO_BUILD)[0]
    for _ in range(2):
        async with open_tree(emulator, tmp_path / "cache") as tree:
            build = await build_dir(tree, DEMO_BUILD)
            entry = await tree.lookup(build.ino, download["name"].encode())
            assert (await tree.getattr(entry.ino)).ino == file_inode(download["id"])
            await tree.read(entry.ino, 0, 1 << 20)
    assert emulator.requests[GET] == 1
    assert emulator.requests[HEAD] == 1


async def test_awkward_names_are_unique_and_safe(emulator: Emulator, tmp_path: Path) -> None:
    async with open_tree(emulator, tmp_path) as tree:
        build = await build_dir(tree, AWKWARD_BUILD)
        entries = await files(tree, build.ino)
        names = [name for name, _ in entries]
        assert len(names) == len(emulator.downloads_of(AWKWARD_BUILD))
        assert len(set(names)) == len(names)
        for name, attrs in entries:
            assert b"/" not in name and b"\0" not in name and 0 < len(name) <= 255
            assert (await tree.lookup(build.ino, name)).ino == attrs.ino


async def test_forbidden_downloads_are_permission_errors(
    emulator: Emulator, tmp_path: Path
) -> None:
    async with open_tree(emulator, tmp_path) as tree:
        build = await build_dir(tree, FORBIDDEN_BUILD)
        (_, attrs), *_ = await files(tree, build.ino)
        with pytest.raises(PermissionDenied):
            await tree.getattr(attrs.ino)
        with pytest.raises(PermissionDenied):
            await tree.read(attrs.ino, 0, 10)


async def test_server_errors_surface_then_recover(emulator: Emulator, tmp_path: Path) -> None:
    configure(emulator, embed_downloads=False)  # builds without their files: lists asked
    async with open_tree(emulator, tmp_path) as tree:
        build = await build_dir(tree, DEMO_BUILD)
        emulator.fail_next(LIST, 500)
        with pytest.raises(ServerError):
            await files(tree, build.ino)
        assert len(await files(tree, build.ino)) == len(emulator.downloads_of(DEMO_BUILD))


async def test_wrong_kinds_and_forgotten_inodes(emulator: Emulator, tmp_path: Path) -> None:
    async with open_tree(emulator, tmp_path) as tree:
        build = await build_dir(tree, DEMO_BUILD)
        (name, _), *_ = await files(tree, build.ino)
        entry = await tree.lookup(build.ino, name)
        with pytest.raises(NotADirectory):
            await tree.listdir(entry.ino)
        with pytest.raises(NotADirectory):
            await tree.lookup(entry.ino, b"x")
        with pytest.raises(IsADirectory):
            await tree.read(build.ino, 0, 1)
        tree.forget(entry.ino, 1)
        with pytest.raises(NoSuchEntry):
            await tree.getattr(entry.ino)
        assert tree.describe(entry.ino) == f"inode {entry.ino}"
        assert tree.describe(build.ino) == f"/builds/{DEMO_BUILD}"


async def test_inodes_are_stable_across_trees(emulator: Emulator, tmp_path: Path) -> None:
    seen = []
    for _ in range(2):
        async with open_tree(emulator, tmp_path) as tree:
            build = await build_dir(tree, DEMO_BUILD)
            seen.append(await files(tree, build.ino))
    assert [(n, a.ino) for n, a in seen[0]] == [(n, a.ino) for n, a in seen[1]]


async def test_after_a_remount_listings_carry_the_stored_sizes(
    emulator: Emulator, tmp_path: Path
) -> None:
    async with open_tree(emulator, tmp_path / "cache") as tree:
        build = await build_dir(tree, DEMO_BUILD)
        for _, attrs in await files(tree, build.ino):
            await tree.getattr(attrs.ino)
    probes = emulator.requests[HEAD]
    async with open_tree(emulator, tmp_path / "cache") as tree:
        build = await build_dir(tree, DEMO_BUILD)
        for _, attrs in await files(tree, build.ino):
            assert attrs.size == emulator.body_path(attrs.ino - FILE_BASE).stat().st_size
            assert attrs.attr_timeout > 0
    assert emulator.requests[HEAD] == probes
    assert emulator.requests[GET] == 0

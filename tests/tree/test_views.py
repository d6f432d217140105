"""The views beyond /builds, through the FUSE-free tree against the real emulator: projects
and patterns with ``latest``, ``/unpacked``, xattrs, ``.build.json``, state-aware caching
and names that desktops probe for."""

from __future__ import annotations

import json
import zipfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from mkwfs.content.store import ContentStore
from mkwfs.emulator import (
    BUILDING_BUILD,
    DEMO_BUILD,
    FAILED_BUILD,
    FORBIDDEN_BUILD,
    Emulator,
)
from mkwfs.remote.api import PAGE_LIMIT, ApiClient, Credentials, RetryPolicy
from mkwfs.remote.errors import (
    NoSuchAttribute,
    NoSuchEntry,
    NotASymlink,
    PermissionDenied,
    UnsupportedAttribute,
)
from mkwfs.tree.tree import (
    BUILDS_INODE,
    MEMBER_BASE,
    PATTERNS_INODE,
    PROJECTS_INODE,
    ROOT_INODE,
    UNPACKED_INODE,
    Attributes,
    Kind,
    Tree,
)
from tests.helpers import BASE_URL

BUILDS = "GET /api/v1/builds"
BUILD = "GET /api/v1/builds/:id"
GET = "GET /api/v1/downloads/:id"
PROBES = [
    b".hidden", b".Trash", b".Trash-1000", b".xdg-volume-info", b"autorun.inf", b".directory",
    b".DS_Store", b"desktop.ini", b"._CORE_DV_HLS.zip", b"Desktop.ini",
]  # fmt: skip


@asynccontextmanager
async def open_tree(
    emulator: Emulator, cache_dir: Path, sent: list[httpx.URL] | None = None
) -> AsyncIterator[Tree]:
    """A tree on the emulator (dir_ttl 10 s, so live_ttl 5 s); ``sent`` collects the URL
    of every request."""

    def handle(request: httpx.Request) -> httpx.Response:
        if sent is not None:
            sent.append(request.url)
        return emulator.handle(request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as http:
        api = ApiClient(http, BASE_URL, Credentials(token=emulator.issue_token()), RetryPolicy(1))
        async with trio.open_nursery() as nursery:
            content = ContentStore(api, cache_dir, nursery)
            yield Tree(api, content, dir_ttl=10.0, attr_ttl=20.0, mount_time=1_000_000.0)
            nursery.cancel_scope.cancel()


async def resolve(tree: Tree, path: str) -> Attributes:
    """Look up each component of ``path`` from the root, as the kernel does."""
    attrs = await tree.getattr(ROOT_INODE)
    for part in path.strip("/").split("/"):
        attrs = await tree.lookup(attrs.ino, part.encode())
    return attrs


def build_json(emulator: Emulator, build_id: int) -> dict[str, Any]:
    """The build object the API sends (without sending a request)."""
    return next(b for b in emulator.builds if b["id"] == build_id)


async def read_all(tree: Tree, ino: int) -> bytes:
    opened = await tree.open(ino)
    if opened.snapshot is not None:
        return opened.snapshot
    return bytes(await tree.read(ino, 0, 1 << 30))


# -- projects and patterns -----------------------------------------------------------


async def test_refresh_of_a_project_asks_its_builds_again_and_no_other(
    emulator: Emulator, tmp_path: Path
) -> None:
    sent: list[httpx.URL] = []
    async with open_tree(emulator, tmp_path, sent) as tree:
        projects = dict(await tree.listdir(PROJECTS_INODE))
        patterns = dict(await tree.listdir(PATTERNS_INODE))
        demo, ddl = projects[b"DEMO_PROJECT"].ino, patterns[b"DWH_DDL"].ino
        await tree.listdir(demo)
        await tree.listdir(ddl)

        def asked(query: str) -> int:
            return sum(1 for u in sent if u.path == "/api/v1/builds" and query in str(u.params))

        assert (asked("project_id=402"), asked("pattern_id=811")) == (1, 1)
        tree.invalidate(demo)
        await tree.listdir(demo)
        await tree.listdir(ddl)
        assert (asked("project_id=402"), asked("pattern_id=811")) == (2, 1)
        lists = sum(1 for u in sent if u.path in ("/api/v1/projects", "/api/v1/patterns"))
        await tree.listdir(PROJECTS_INODE)
        await tree.listdir(PATTERNS_INODE)
        assert sum(1 for u in sent if u.path in ("/api/v1/projects", "/api/v1/patterns")) == lists

        tree.invalidate(PROJECTS_INODE)  # the projects, and which builds each group has
        await tree.listdir(PROJECTS_INODE)
        await tree.listdir(PATTERNS_INODE)
        assert sum(1 for u in sent if u.path == "/api/v1/projects") == 2
        assert sum(1 for u in sent if u.path == "/api/v1/patterns") == 1


async def test_projects_and_patterns_list_their_builds_by_the_apis_filters(
    emulator: Emulator, tmp_path: Path
) -> None:
    sent: list[httpx.URL] = []
    async with open_tree(emulator, tmp_path, sent) as tree:
        projects = dict(await tree.listdir(PROJECTS_INODE))
        assert set(projects) == {p["name"].encode() for p in emulator.projects}
        patterns = dict(await tree.listdir(PATTERNS_INODE))
        assert set(patterns) == {p["name"].encode() for p in emulator.patterns}

        demo = dict(await tree.listdir(projects[b"DEMO_PROJECT"].ino))
        expected = sorted(b["id"] for b in emulator.builds if b["project_id"] == 402)
        assert sorted(int(n) for n in demo if n != b"latest") == expected
        for name, attrs in demo.items():
            assert attrs.kind is Kind.SYMLINK
            if name != b"latest":
                assert await tree.readlink(attrs.ino) == b"../../builds/" + name

        dv = dict(await tree.listdir(patterns[b"DWH_DDL"].ino))
        expected = sorted(b["id"] for b in emulator.builds if 811 in b["patterns"])
        assert sorted(int(n) for n in dv if n != b"latest") == expected

    build_queries = [u.params for u in sent if u.path == "/api/v1/builds"]
    # Each filter asks for pages of the largest size (issue 16: $limit).
    assert sorted(map(str, build_queries)) == [
        f"pattern_id=811&%24limit={PAGE_LIMIT}",
        f"project_id=402&%24limit={PAGE_LIMIT}",
    ]


async def test_latest_points_to_the_newest_finished_build_and_follows_a_finish(
    emulator: Emulator, tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    async with open_tree(emulator, tmp_path) as tree:
        latest = await resolve(tree, "projects/DEMO_PROJECT/latest")
        newest = max(
            (b for b in emulator.builds if b["project_id"] == 402 and b["status"] == "FINISHED"),
            key=lambda b: b["build_end"],
        )
        assert await tree.readlink(latest.ino) == str(newest["id"]).encode()
        assert (await tree.getattr(latest.ino)).size == len(str(newest["id"]))
        # Through the link, the build directory: the kernel follows it by path.
        assert (await resolve(tree, f"builds/{newest['id']}")).is_dir

        emulator.finish_build(BUILDING_BUILD)
        mock_clock.jump(4.0)  # the project has a running build: asked again after live_ttl
        assert await tree.readlink(latest.ino) == str(newest["id"]).encode()
        mock_clock.jump(2.0)
        assert await tree.readlink(latest.ino) == str(BUILDING_BUILD).encode()
        assert await tree.readlink(latest.ino) == str(BUILDING_BUILD).encode()
        with pytest.raises(NotASymlink):
            await tree.readlink(PROJECTS_INODE)


async def test_a_group_without_finished_builds_has_no_latest(
    emulator: Emulator, tmp_path: Path
) -> None:
    async with open_tree(emulator, tmp_path) as tree:
        group = await resolve(tree, "projects/ARCHIVE")  # a project without builds
        assert await tree.listdir(group.ino) == []
        with pytest.raises(NoSuchEntry):
            await tree.lookup(group.ino, b"latest")
        with pytest.raises(NoSuchEntry):
            await tree.lookup(group.ino, str(DEMO_BUILD).encode())  # not this project's


async def test_a_build_newer_than_the_cached_list_makes_the_list_stale(
    emulator: Emulator, tmp_path: Path
) -> None:
    async with open_tree(emulator, tmp_path) as tree:
        await tree.listdir(BUILDS_INODE)
        new = dict(build_json(emulator, DEMO_BUILD), id=9999, downloads=[])
        emulator.builds.append(new)
        links = dict(await tree.listdir((await resolve(tree, "projects/DEMO_PROJECT")).ino))
        assert b"9999" in links
        assert (await tree.lookup(BUILDS_INODE, b"9999")).is_dir  # the list was asked again
    assert emulator.requests[BUILDS] == 3


# -- metadata -----------------------------------------------------------------------


async def test_xattrs_carry_the_apis_fields_and_missing_ones_are_enodata(
    emulator: Emulator, tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    build = build_json(emulator, BUILDING_BUILD)
    download = emulator.downloads_of(BUILDING_BUILD)[0]
    async with open_tree(emulator, tmp_path) as tree:
        directory = await resolve(tree, f"builds/{BUILDING_BUILD}")
        names = await tree.xattrs(directory.ino)
        for field in ("status", "progress", "message", "project_id", "name"):
            key = f"user.mkw.build.{field}".encode()
            assert key in names
            assert await tree.getxattr(directory.ino, key) == str(build[field]).encode()
        assert b"user.mkw.build.build_end" not in names  # null while building
        with pytest.raises(NoSuchAttribute):
            await tree.getxattr(directory.ino, b"user.mkw.build.build_end")
        with pytest.raises(NoSuchAttribute):
            await tree.getxattr(directory.ino, b"user.other")

        file = await resolve(tree, f"builds/{BUILDING_BUILD}/{download['name']}")
        for field in ("id", "pattern_id", "type", "version", "build_id"):
            key = f"user.mkw.download.{field}".encode()
            assert await tree.getxattr(file.ino, key) == str(download[field]).encode()
        with pytest.raises(NoSuchAttribute):
            await tree.getxattr(file.ino, b"user.mkw.download.file_id")  # null in the API
        unpacked = await resolve(tree, f"unpacked/{BUILDING_BUILD}/{download['name']}")
        assert await tree.xattrs(unpacked.ino) == await tree.xattrs(file.ino)
        assert await tree.xattrs(ROOT_INODE) == {}

        mock_clock.jump(6.0)  # the running build's record is stale now
        before = emulator.requests[BUILD]
        for name in (b"security.selinux", b"system.posix_acl_access"):  # what ls asks
            with pytest.raises(UnsupportedAttribute):
                await tree.getxattr(directory.ino, name)
        assert emulator.requests[BUILD] == before
    assert emulator.requests[GET] == 0


async def test_build_json_is_the_build_object_and_a_running_one_stays_fresh(
    emulator: Emulator, tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    async with open_tree(emulator, tmp_path) as tree:
        for build_id in (DEMO_BUILD, FAILED_BUILD, BUILDING_BUILD):
            entry = await resolve(tree, f"builds/{build_id}/.build.json")
            data = await read_all(tree, entry.ino)
            assert json.loads(data) == build_json(emulator, build_id)
            assert (await tree.getattr(entry.ino)).size == len(data)
            hidden = dict(await tree.listdir((await resolve(tree, f"builds/{build_id}")).ino))
            assert b".build.json" in hidden
        assert emulator.requests[BUILD] == 0  # the list of builds had the objects

        entry = await resolve(tree, f"builds/{BUILDING_BUILD}/.build.json")
        record = next(b for b in emulator.builds if b["id"] == BUILDING_BUILD)
        record["progress"] = 80
        mock_clock.jump(6.0)  # past live_ttl
        data = await read_all(tree, entry.ino)
        assert json.loads(data)["progress"] == 80
        assert (await tree.getattr(entry.ino)).attr_timeout == 0  # its size may change
        assert emulator.requests[BUILD] == 1
        directory = await resolve(tree, f"builds/{BUILDING_BUILD}")
        assert await tree.getxattr(directory.ino, b"user.mkw.build.progress") == b"80"

        # Past live_ttl too, but a finished build's object is kept for dir_ttl.
        finished = await resolve(tree, f"builds/{DEMO_BUILD}/.build.json")
        await read_all(tree, finished.ino)
        assert emulator.requests[BUILD] == 1


# -- /unpacked ----------------------------------------------------------------------


async def test_unpacked_view_mirrors_each_archive_with_stable_member_inodes(
    emulator: Emulator, tmp_path: Path
) -> None:
    download = emulator.downloads_of(DEMO_BUILD)[0]
    async with open_tree(emulator, tmp_path) as tree:
        assert [n for n, _ in await tree.listdir(UNPACKED_INODE)] == [
            n for n, _ in await tree.listdir(BUILDS_INODE)
        ]
        build = await resolve(tree, f"unpacked/{DEMO_BUILD}")
        archives = dict(await tree.listdir(build.ino))
        assert set(archives) == {d["name"].encode() for d in emulator.downloads_of(DEMO_BUILD)}
        assert all(a.is_dir for a in archives.values())
        assert emulator.requests[GET] == 0  # listing archives reads none of them

        archive = archives[download["name"].encode()]
        found: dict[str, Attributes] = {}

        async def walk(ino: int, prefix: str) -> None:
            for name, attrs in await tree.listdir(ino):
                tree.remember(attrs.ino)
                found[prefix + name.decode()] = attrs
                if attrs.is_dir:
                    await walk(attrs.ino, f"{prefix}{name.decode()}/")

        await walk(archive.ino, "")
        other = archives[emulator.downloads_of(DEMO_BUILD)[1]["name"].encode()]
        others = {a.ino for _, a in await tree.listdir(other.ino)}
        assert others and others.isdisjoint(a.ino for a in found.values())
        with zipfile.ZipFile(emulator.body_path(download["id"])) as original:
            files = {i.filename: i for i in original.infolist() if not i.is_dir()}
            assert {p for p, a in found.items() if not a.is_dir} == set(files)
            for path, info in files.items():
                assert found[path].size == info.file_size
                assert found[path].ino >= MEMBER_BASE
                assert await read_all(tree, found[path].ino) == original.read(path)
        assert len({a.ino for a in found.values()}) == len(found)
        again = {name: a.ino for name, a in await tree.listdir(archive.ino)}
        assert all(found[name.decode()].ino == ino for name, ino in again.items())


async def test_unpacked_errors_of_the_server_pass_through(
    emulator: Emulator, tmp_path: Path
) -> None:
    name = emulator.downloads_of(FORBIDDEN_BUILD)[0]["name"]
    async with open_tree(emulator, tmp_path) as tree:
        archive = await resolve(tree, f"unpacked/{FORBIDDEN_BUILD}/{name}")
        with pytest.raises(PermissionDenied):
            await tree.listdir(archive.ino)


# -- names desktops probe for --------------------------------------------------------


async def test_probe_names_cost_no_request_anywhere(emulator: Emulator, tmp_path: Path) -> None:
    download = emulator.downloads_of(DEMO_BUILD)[0]
    async with open_tree(emulator, tmp_path) as tree:
        directories = [
            "builds", "projects", "patterns", "unpacked", f"builds/{DEMO_BUILD}",
            f"unpacked/{DEMO_BUILD}", "projects/DEMO_PROJECT", "patterns/DWH_DDL",
            f"unpacked/{DEMO_BUILD}/{download['name']}",
        ]  # fmt: skip
        inodes = [ROOT_INODE] + [(await resolve(tree, d)).ino for d in directories]
        emulator.reset_counters()
        for ino in inodes:
            for name in PROBES:
                with pytest.raises(NoSuchEntry):
                    await tree.lookup(ino, name)
    assert sum(emulator.requests.values()) == 0

"""The file tree, without FUSE: resolve names, list directories, stat, read, links, xattrs.

::

    /                               ROOT_INODE
    ├── builds/                     BUILDS_INODE       one directory per build (GET /builds)
    │   └── <build id>/             BUILD_BASE         its downloads (GET /downloads?build_id=)
    │       ├── .build.json         BUILD_JSON_BASE    the build object (GET /builds/:id)
    │       └── <name>              FILE_BASE          the body, fetched lazily on read
    ├── projects/                   PROJECTS_INODE     one directory per project
    │   └── <project name>/         PROJECT_BASE       GET /builds?project_id=
    │       ├── <build id>          BUILD_LINK_BASE    -> ../../builds/<build id>
    │       └── latest              PROJECT_LATEST_BASE -> <newest FINISHED build id>
    ├── patterns/                   PATTERNS_INODE     the same by pattern (GET /builds?pattern_id=)
    │   └── <pattern name>/         PATTERN_BASE       (links as above, PATTERN_LATEST_BASE)
    └── unpacked/                   UNPACKED_INODE     one directory per build
        └── <build id>/             UNPACKED_BUILD_BASE
            └── <name>/             ARCHIVE_BASE       the ZIP's members (its central directory)
                └── ...             MEMBER_BASE..      directories and files of the archive

Inode numbers: a kind in the bits from 40 up, the API's id below (``BUILD_BASE + build id``),
so they are stable across listings and remounts and never reused for something else (tools
such as rsync, tar and find rely on that). A build's link has one inode wherever it appears
(its target is the same). ZIP members have no id of their own: the first time an archive is
indexed it gets a block of numbers from a counter that only grows, and a member's inode is
the block's start plus its position in the index, so it is stable for the life of the mount
and never recycled.

Caching: the list of builds, projects and patterns for ``dir_ttl`` seconds; the files of a
FINISHED, FAILED or CANCELED build (which can no longer change) for ``final_ttl``; those of a
BUILDING build, its ``.build.json`` and attributes, and a project's or pattern's builds while
one of them is running, for ``live_ttl``. A name missing from a cached listing is answered
``NoSuchEntry`` without a request, and so is every name desktops probe for (``.hidden``,
``desktop.ini``, ...; see ``names.is_probe_name``) unless it is in an archive whose index is
already read. Attributes carry their own timeouts for the kernel: a download whose size is
not known yet is reported with size 0 and an attribute timeout of 0, so the kernel asks
``getattr`` (which probes the true size) before it uses the size for ``stat`` or ``read``. A
plain directory listing thus never costs a size probe, and browsing never a body.

Failures: every request the tree makes for an operation (a listing, a build record, a size
probe; retries included) is bounded by ``timeout`` seconds, after which it fails with
``TransportError`` (EIO); an operation makes at most one such request, besides the reads of
a body, which fail once their bytes stop coming for the content store's ``stall_timeout``.
Stale-if-error: each listing (builds, a build's files, a build record, projects, patterns,
a project's or pattern's builds) is also kept as the last good one, past its TTL, and is
served when a refresh fails transiently (the server out of reach, no answer in time, 5xx,
429; see ``views.LastGood``); ``staleness`` says so for ``mkwfs status``.
"""

from __future__ import annotations

import bisect
import enum
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import trio

from mkwfs.catalog.cache import AsyncTTLCache
from mkwfs.content.store import ContentStore
from mkwfs.remote.api import ApiClient
from mkwfs.remote.errors import (
    IsADirectory,
    NoSuchAttribute,
    NoSuchEntry,
    NotADirectory,
    NotASymlink,
    TransportError,
    UnsupportedAttribute,
)
from mkwfs.remote.models import Build, Download
from mkwfs.tree import views, zipview
from mkwfs.tree.names import file_names, is_probe_name

ROOT_INODE = 1
BUILDS_INODE = 2
PROJECTS_INODE = 3
PATTERNS_INODE = 4
UNPACKED_INODE = 5
_KIND_SHIFT = 40
_ID_LIMIT = 1 << _KIND_SHIFT
BUILD_BASE = 1 << _KIND_SHIFT
FILE_BASE = 2 << _KIND_SHIFT
BUILD_JSON_BASE = 3 << _KIND_SHIFT
PROJECT_BASE = 4 << _KIND_SHIFT
PATTERN_BASE = 5 << _KIND_SHIFT
BUILD_LINK_BASE = 6 << _KIND_SHIFT
PROJECT_LATEST_BASE = 7 << _KIND_SHIFT
PATTERN_LATEST_BASE = 8 << _KIND_SHIFT
UNPACKED_BUILD_BASE = 9 << _KIND_SHIFT
ARCHIVE_BASE = 10 << _KIND_SHIFT
#: Member inodes count up from here, a block per archive (see the module docstring).
MEMBER_BASE = 16 << _KIND_SHIFT

BUILDS_NAME = b"builds"
PROJECTS_NAME = b"projects"
PATTERNS_NAME = b"patterns"
UNPACKED_NAME = b"unpacked"
BUILD_JSON_NAME = b".build.json"
LATEST_NAME = b"latest"

#: Seconds between two size probes in one build that make it look like a directory scan.
_SCAN_WINDOW = 2.0
#: How many files from the one a scan stats have their sizes probed ahead at first; twice as
#: many once the scan is half way through them, and so on up to ``_SCAN_AHEAD``, so that its
#: probes never run dry. A few stats (a copy of a few files) start only a few probes.
_SCAN_FIRST = 32
_SCAN_AHEAD = 128
#: A readdir hands out at most this many files of unknown size while nobody is seen to stat
#: the directory's files: one who does shows before the rest are handed out.
_READDIR_UNKNOWN = 32
#: Once a scan goes through a directory, a readdir hands out this many files with their sizes.
_READDIR_BATCH = 64
#: How many entries a readdir looks at: more than fit at once.
_READDIR_WINDOW = 512
#: Archive indexes kept in memory (a re-read costs only disk reads: the tail is cached).
_INDEXES = 64

T = TypeVar("T")


class Kind(enum.Enum):
    DIR = "dir"
    FILE = "file"
    SYMLINK = "symlink"


@dataclass(frozen=True)
class Attributes:
    ino: int
    kind: Kind
    size: int
    mtime: float
    nlink: int
    #: Seconds the kernel may keep these attributes (0: ask again before using them).
    attr_timeout: float
    #: Seconds the kernel may keep the name -> inode mapping.
    entry_timeout: float

    @property
    def is_dir(self) -> bool:
        return self.kind is Kind.DIR


@dataclass(frozen=True)
class OpenFile:
    """How to serve an opened file. ``snapshot`` is set for generated files whose bytes may
    change (``.build.json``): the handle reads these bytes, not the size the kernel knows."""

    ino: int
    keep_cache: bool
    snapshot: bytes | None = None
    #: The download whose body this handle reads, held in the cache until ``close``.
    download_id: int | None = None


# -- nodes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Root:
    ino: int = ROOT_INODE


@dataclass(frozen=True)
class _Builds:
    ino: int = BUILDS_INODE


@dataclass(frozen=True)
class _Unpacked:
    ino: int = UNPACKED_INODE


@dataclass(frozen=True)
class _Groups:
    ino: int
    kind: views.GroupKind


@dataclass(frozen=True)
class _BuildDir:
    ino: int
    build: Build


@dataclass(frozen=True)
class _File:
    ino: int
    download: Download
    build: Build
    name: bytes


@dataclass(frozen=True)
class _BuildJson:
    ino: int
    build: Build


@dataclass(frozen=True)
class _Group:
    ino: int
    group: views.Group


@dataclass(frozen=True)
class _BuildLink:
    ino: int
    build: Build


@dataclass(frozen=True)
class _Latest:
    ino: int
    group: views.Group


@dataclass(frozen=True)
class _UnpackedBuild:
    ino: int
    build: Build


@dataclass(frozen=True)
class _Archive:
    ino: int
    download: Download
    build: Build
    name: bytes


@dataclass(frozen=True)
class _Member:
    ino: int
    archive: _Archive
    entry: zipview.Entry


_Node = (
    _Root | _Builds | _Unpacked | _Groups | _BuildDir | _File | _BuildJson | _Group
    | _BuildLink | _Latest | _UnpackedBuild | _Archive | _Member
)  # fmt: skip
_FIXED: dict[int, _Node] = {
    ROOT_INODE: _Root(),
    BUILDS_INODE: _Builds(),
    PROJECTS_INODE: _Groups(PROJECTS_INODE, "project"),
    PATTERNS_INODE: _Groups(PATTERNS_INODE, "pattern"),
    UNPACKED_INODE: _Unpacked(),
}
_TOP_NAMES: dict[bytes, int] = {
    BUILDS_NAME: BUILDS_INODE,
    PATTERNS_NAME: PATTERNS_INODE,
    PROJECTS_NAME: PROJECTS_INODE,
    UNPACKED_NAME: UNPACKED_INODE,
}
_GROUP_BASE: dict[views.GroupKind, int] = {"project": PROJECT_BASE, "pattern": PATTERN_BASE}
_LATEST_BASE: dict[views.GroupKind, int] = {
    "project": PROJECT_LATEST_BASE,
    "pattern": PATTERN_LATEST_BASE,
}
_GROUPS_PATH: dict[views.GroupKind, str] = {"project": "/projects", "pattern": "/patterns"}

#: A build's files: unique name -> download, in name order: the order a directory lists
#: them in, so ``ls -l`` stats them in the order a scan probes them.
Listing = dict[bytes, Download]


@dataclass
class _Scan:
    """Someone going through a build's files in name order (``ls -l``): what is probed."""

    build_id: int
    names: list[bytes]
    listing: Listing
    #: ``names`` before this index have been given to ``prefetch_sizes``.
    horizon: int = 0
    #: How many were given the last time, and how many will be the next.
    given: int = 0
    step: int = _SCAN_FIRST
    #: When the scan was last seen going on (a stat or a readdir of its directory).
    seen: float = 0.0
    #: A probe for a readdir failed: the rest goes stat by stat (see ``entries_from``).
    failed: bool = False


def build_inode(build_id: int) -> int:
    return BUILD_BASE + build_id


def file_inode(download_id: int) -> int:
    return FILE_BASE + download_id


@dataclass(frozen=True)
class DirSnapshot:
    """A directory's entries as a readdir handle keeps them (`Tree.snapshot`): names, and
    what they name, whose attributes are taken as they are handed out (`entries_from`)."""

    directory: _Node
    entries: list[tuple[bytes, _Node]]


class Tree:
    """What the mount shows, in terms of inodes and names. Raises only ``MkwfsError``.

    ``final_ttl`` defaults to a day, ``live_ttl`` to ``min(dir_ttl, 5)`` seconds;
    ``timeout`` bounds each request (see the module docstring).
    """

    def __init__(
        self,
        api: ApiClient,
        content: ContentStore,
        *,
        dir_ttl: float = 60.0,
        attr_ttl: float = 60.0,
        final_ttl: float = 86400.0,
        live_ttl: float | None = None,
        timeout: float = 15.0,
        timer: Callable[[], float] = trio.current_time,
        mount_time: float | None = None,
    ) -> None:
        self._api = api
        self.timeout = timeout
        self.staleness = views.Staleness()
        self._content = content
        self._members = zipview.MemberReader(content)
        self.dir_ttl = dir_ttl
        self.attr_ttl = attr_ttl
        self.live_ttl = min(dir_ttl, 5.0) if live_ttl is None else live_ttl
        self._mount_time = time.time() if mount_time is None else mount_time
        self._builds = AsyncTTLCache[None, dict[int, Build]](ttl=dir_ttl, maxsize=1, timer=timer)
        self._listings = views.StateAwareCache[int, Listing](
            final_ttl=final_ttl, live_ttl=self.live_ttl, timer=timer
        )
        #: The newest record of each build: from GET /builds/:id or from any list of builds.
        self._records = views.StateAwareCache[int, Build](
            final_ttl=dir_ttl, live_ttl=self.live_ttl, maxsize=4096, timer=timer
        )
        self._groups = AsyncTTLCache[views.GroupKind, dict[bytes, views.Group]](
            ttl=dir_ttl, maxsize=2, timer=timer
        )
        self._group_builds = views.StateAwareCache[tuple[views.GroupKind, int], dict[int, Build]](
            final_ttl=dir_ttl, live_ttl=self.live_ttl, timer=timer
        )
        stale = self.staleness
        self._last_builds = views.LastGood[None, dict[int, Build]](stale, maxsize=1, timer=timer)
        self._last_listings = views.LastGood[int, Listing](stale, timer=timer)
        self._last_records = views.LastGood[int, Build](stale, timer=timer)
        self._last_groups = views.LastGood[views.GroupKind, dict[bytes, views.Group]](
            stale, maxsize=2, timer=timer
        )
        self._last_group_builds = views.LastGood[tuple[views.GroupKind, int], dict[int, Build]](
            stale, timer=timer
        )
        self._indexes = AsyncTTLCache[int, zipview.ArchiveIndex](
            ttl=math.inf, maxsize=_INDEXES, timer=timer
        )
        #: Download id -> (first inode, count) of its archive's member block.
        self._member_blocks: dict[int, tuple[int, int]] = {}
        self._next_member_inode = MEMBER_BASE
        self._nodes: dict[int, _Node] = dict(_FIXED)
        self._lookups: Counter[int] = Counter()
        self._timer = timer
        #: (build id, download id, time) of the last getattr that needed a size probe.
        self._last_probe: tuple[int, int, float] | None = None
        #: The directory scan going on, if any (see ``getattr``).
        self._scan: _Scan | None = None

    # -- the API, bounded and cached -----------------------------------------------------

    async def _bounded(self, call: Callable[[], Awaitable[T]]) -> T:
        """``await call()``, or ``TransportError`` once ``timeout`` seconds have passed."""
        with trio.move_on_after(self.timeout):
            return await call()
        raise TransportError(
            f"no answer from the server within {self.timeout:g} s", url=self._api.base_url
        )

    async def _ask(self, call: Callable[[], Awaitable[T]]) -> T:
        """An API request, bounded; its success means the server answers again."""
        result = await self._bounded(call)
        self.staleness.fresh()
        return result

    async def _known_size(self, download_id: int) -> int:
        """The size of a download, probed (bounded) if not known yet."""
        size = self._content.known_size(download_id)
        if size is None:
            size = await self._bounded(lambda: self._content.size(download_id))
        return size

    def _remember_builds(self, builds: list[Build]) -> dict[int, Build]:
        """The builds of a list by id (ids the tree can show), each kept as its newest record."""
        usable = {b.id: b for b in builds if 0 <= b.id < _ID_LIMIT}
        for build in usable.values():
            self._records.put(build.id, build, final=build.is_final)
            self._last_records.put(build.id, build)
        return usable

    async def _all_builds(self) -> dict[int, Build]:
        async def load() -> dict[int, Build]:
            return self._remember_builds(await self._ask(self._api.list_builds))

        return await self._last_builds.get(None, lambda: self._builds.get(None, load))

    async def _record(self, build: Build) -> Build:
        """The build's newest record, asked again once it may have changed."""

        async def load() -> tuple[Build, bool]:
            fresh = await self._ask(lambda: self._api.get_build(build.id))
            return fresh, fresh.is_final

        return await self._last_records.get(build.id, lambda: self._records.get(build.id, load))

    async def _listing(self, build: Build) -> Listing:
        async def load() -> tuple[Listing, bool]:
            # A build already known to be over has all its files: its listing is final.
            final = self._fresh_build(build).is_final
            downloads = await self._ask(lambda: self._api.list_downloads(build.id))
            mine = [d for d in downloads if d.build_id in (None, build.id) and d.id < _ID_LIMIT]
            await self._content.load_stored_sizes()
            return dict(sorted(file_names(mine))), final

        return await self._last_listings.get(build.id, lambda: self._listings.get(build.id, load))

    async def _group_list(self, kind: views.GroupKind) -> dict[bytes, views.Group]:
        async def load() -> dict[bytes, views.Group]:
            if kind == "project":
                records = await self._ask(self._api.list_projects)
            else:
                records = await self._ask(self._api.list_patterns)
            return {g.name: g for g in views.groups(kind, records, _ID_LIMIT)}

        return await self._last_groups.get(kind, lambda: self._groups.get(kind, load))

    async def _builds_of(self, group: views.Group) -> dict[int, Build]:
        """The group's builds, from the API's ``project_id``/``pattern_id`` filter."""

        async def load() -> tuple[dict[int, Build], bool]:
            found = await self._ask(lambda: self._api.list_builds(**{f"{group.kind}_id": group.id}))
            builds = self._remember_builds([b for b in found if group.holds(b)])
            cached = self._builds.peek(None)
            if cached is not None and not builds.keys() <= cached.keys():
                self._builds.invalidate()  # A build newer than the cached list: ask again.
            return builds, all(b.is_final for b in builds.values())

        key = (group.kind, group.id)
        return await self._last_group_builds.get(key, lambda: self._group_builds.get(key, load))

    async def _latest(self, group: views.Group) -> Build:
        latest = views.newest_finished((await self._builds_of(group)).values())
        if latest is None:
            raise NoSuchEntry(f"{group.kind} {group.id} has no finished build")
        return latest

    async def _index(self, archive: _Archive) -> zipview.ArchiveIndex:
        download_id = archive.download.id

        async def load() -> zipview.ArchiveIndex:
            await self._known_size(download_id)
            mtime = self._fresh_build(archive.build).mtime
            index = await zipview.read_index(self._content, download_id, mtime=mtime)
            block = self._member_blocks.get(download_id)
            if block is None or block[1] != len(index.entries):
                self._member_blocks[download_id] = (self._next_member_inode, len(index.entries))
                self._next_member_inode += len(index.entries)
            return index

        return await self._indexes.get(download_id, load)

    def seed_builds(self, builds: list[Build]) -> None:
        """Use a build list fetched elsewhere (the startup check) as the cached one."""
        usable = self._remember_builds(builds)
        self._builds.put(None, usable)
        self._last_builds.put(None, usable)

    def invalidate(self) -> None:
        """Forget every cached listing (the next access asks the API again). The last good
        listings stay for stale-if-error; archive indexes stay: a download's bytes never
        change."""
        self._builds.invalidate()
        self._listings.invalidate()
        self._records.invalidate()
        self._groups.invalidate()
        self._group_builds.invalidate()
        for last in (
            self._last_builds, self._last_listings, self._last_records, self._last_groups,
            self._last_group_builds,
        ):  # fmt: skip
            last.retry_now()

    # -- nodes -------------------------------------------------------------------------

    def _node(self, ino: int) -> _Node:
        try:
            return self._nodes[ino]
        except KeyError:
            raise NoSuchEntry(f"inode {ino} is not known") from None

    def _fresh_build(self, build: Build) -> Build:
        """The newest record of a build that is cached, without a request."""
        record = self._records.peek(build.id)
        if record is not None:
            return record
        builds = self._builds.peek(None)
        return builds.get(build.id, build) if builds is not None else build

    def _member(self, archive: _Archive, index: zipview.ArchiveIndex, position: int) -> _Member:
        first, _ = self._member_blocks[archive.download.id]
        return _Member(first + position, archive, index.entries[position])

    async def _children(self, node: _Node) -> list[tuple[bytes, _Node]]:
        match node:
            case _Root():
                return [(name, self._nodes[ino]) for name, ino in _TOP_NAMES.items()]
            case _Builds() | _Unpacked():
                builds = await self._all_builds()
                return [
                    (str(i).encode(), self._build_node(node, builds[i])) for i in sorted(builds)
                ]
            case _Groups(kind=kind):
                return [
                    (name, _Group(_GROUP_BASE[kind] + g.id, g))
                    for name, g in (await self._group_list(kind)).items()
                ]
            case _BuildDir(build=build):
                listing = await self._listing(build)
                entries: list[tuple[bytes, _Node]] = [
                    (BUILD_JSON_NAME, _BuildJson(BUILD_JSON_BASE + build.id, build))
                ]
                entries += [
                    (name, _File(file_inode(d.id), d, build, name)) for name, d in listing.items()
                ]
                return entries
            case _UnpackedBuild(build=build):
                listing = await self._listing(build)
                return [
                    (name, _Archive(ARCHIVE_BASE + d.id, d, build, name))
                    for name, d in listing.items()
                ]
            case _Group(group=group):
                builds = await self._builds_of(group)
                links: list[tuple[bytes, _Node]] = [
                    (str(i).encode(), _BuildLink(BUILD_LINK_BASE + i, builds[i]))
                    for i in sorted(builds)
                ]
                if views.newest_finished(builds.values()) is not None:
                    links.append((LATEST_NAME, _Latest(_LATEST_BASE[group.kind] + group.id, group)))
                return links
            case _Archive() | _Member():
                archive, position = _archive_position(node)
                index = await self._index(archive)
                return [
                    (name, self._member(archive, index, child))
                    for name, child in index.children.get(position, {}).items()
                ]
            case _:
                raise NotADirectory(f"inode {node.ino} is not a directory")

    @staticmethod
    def _build_node(parent: _Builds | _Unpacked, build: Build) -> _BuildDir | _UnpackedBuild:
        if isinstance(parent, _Builds):
            return _BuildDir(build_inode(build.id), build)
        return _UnpackedBuild(UNPACKED_BUILD_BASE + build.id, build)

    async def _child(self, node: _Node, name: bytes) -> _Node:
        match node:
            case _Root():
                ino = _TOP_NAMES.get(name)
                if ino is not None:
                    return self._nodes[ino]
            case _Builds() | _Unpacked():
                build_id = _parse_id(name)
                if build_id is not None:
                    build = (await self._all_builds()).get(build_id)
                    if build is not None:
                        return self._build_node(node, build)
            case _Groups(kind=kind):
                group = (await self._group_list(kind)).get(name)
                if group is not None:
                    return _Group(_GROUP_BASE[kind] + group.id, group)
            case _BuildDir(build=build) if name == BUILD_JSON_NAME:
                return _BuildJson(BUILD_JSON_BASE + build.id, build)
            case _BuildDir(build=build) | _UnpackedBuild(build=build):
                download = (await self._listing(build)).get(name)
                if download is not None:
                    if isinstance(node, _BuildDir):
                        return _File(file_inode(download.id), download, build, name)
                    return _Archive(ARCHIVE_BASE + download.id, download, build, name)
            case _Group(group=group) if name == LATEST_NAME:
                await self._latest(group)
                return _Latest(_LATEST_BASE[group.kind] + group.id, group)
            case _Group(group=group):
                build_id = _parse_id(name)
                if build_id is not None:
                    build = (await self._builds_of(group)).get(build_id)
                    if build is not None:
                        return _BuildLink(BUILD_LINK_BASE + build_id, build)
            case _Archive() | _Member():
                archive, position = _archive_position(node)
                index = await self._index(archive)
                child = index.children.get(position, {}).get(name)
                if child is not None:
                    return self._member(archive, index, child)
            case _:
                raise NotADirectory(f"inode {node.ino} is not a directory")
        raise NoSuchEntry(f"no {name!r} in {self.describe(node.ino)}")

    def _holds_probe_names(self, node: _Node) -> bool:
        """Whether a probe name may really be in this directory: only in an archive whose
        index is already read (archives are shown as they are; nothing else ever is)."""
        if isinstance(node, _Archive | _Member):
            return self._indexes.peek(_archive_position(node)[0].download.id) is not None
        return False

    # -- attributes --------------------------------------------------------------------

    def _attributes(self, node: _Node, size: int | None = None) -> Attributes:
        """Attributes from what is known without a request (see ``getattr`` for the rest);
        ``size``: a file's true size, when the caller has it."""
        match node:
            case _Root() | _Builds() | _Unpacked() | _Groups() | _Group():
                return self._dir_attributes(node.ino, self._mount_time)
            case _BuildDir(build=build) | _UnpackedBuild(build=build) | _Archive(build=build):
                return self._dir_attributes(node.ino, self._fresh_build(build).mtime)
            case _Member(entry=entry) if entry.is_dir:
                return self._dir_attributes(node.ino, entry.mtime)
            case _Member(entry=entry):
                return self._file_attributes(node.ino, entry.size, entry.mtime, self.attr_ttl)
            case _File(download=download, build=build):
                if size is None:
                    size = self._content.known_size(download.id)
                timeout = self.attr_ttl if size is not None else 0.0
                return self._file_attributes(
                    node.ino, size or 0, self._fresh_build(build).mtime, timeout
                )
            case _BuildJson(build=build):
                record = self._records.peek(build.id)
                if size is None and record is not None and record.has_indented_json:
                    size = len(views.build_json(record))
                if record is None or size is None:
                    # Encoding a build of many files takes milliseconds: a listing does not
                    # wait for it, a stat of the file does (see getattr).
                    return self._file_attributes(node.ino, 0, self._fresh_build(build).mtime, 0)
                timeout = self.attr_ttl if record.is_final else 0.0
                return self._file_attributes(node.ino, size, record.mtime, timeout)
            case _BuildLink(build=build):
                target = _link_target(build)
                return self._link_attributes(node.ino, target, build.mtime, self.attr_ttl)
            case _Latest(group=group):
                builds = self._group_builds.peek((group.kind, group.id)) or {}
                latest = views.newest_finished(builds.values())
                if latest is None:
                    return self._link_attributes(node.ino, b"", self._mount_time, 0.0)
                return self._link_attributes(node.ino, str(latest.id).encode(), latest.mtime, 0.0)

    def _dir_attributes(self, ino: int, mtime: float) -> Attributes:
        return Attributes(ino, Kind.DIR, 0, mtime, 2, self.attr_ttl, self.dir_ttl)

    def _file_attributes(self, ino: int, size: int, mtime: float, timeout: float) -> Attributes:
        return Attributes(ino, Kind.FILE, size, mtime, 1, timeout, self.dir_ttl)

    def _link_attributes(self, ino: int, target: bytes, mtime: float, timeout: float) -> Attributes:
        return Attributes(ino, Kind.SYMLINK, len(target), mtime, 1, timeout, self.dir_ttl)

    # -- operations --------------------------------------------------------------------

    async def lookup(self, parent: int, name: bytes) -> Attributes:
        """Resolve ``name`` in directory ``parent``; counts one kernel lookup of the result.
        A name desktops probe for costs no request (see the module docstring)."""
        node = self._node(parent)
        if is_probe_name(name) and not self._holds_probe_names(node):
            if not self._attributes(node).is_dir:
                raise NotADirectory(f"inode {parent} is not a directory")
            raise NoSuchEntry(f"{name!r} is a name desktops probe for")
        child = await self._child(node, name)
        self._nodes.setdefault(child.ino, child)
        self._lookups[child.ino] += 1
        return self._attributes(child)

    async def getattr(self, ino: int) -> Attributes:
        """Attributes with the true size: a download's size is probed if not known yet,
        ``.build.json`` and ``latest`` are brought up to date.

        When two files of one build need a probe within ``_SCAN_WINDOW`` seconds, someone is
        going through the directory (``ls -l``, a file manager): the sizes of the second one
        and of the files after it (in name order, as ``ls`` goes), ``_SCAN_FIRST`` in all,
        are then probed concurrently in the background, instead of one stat at a time. Once
        the scan is half way through them, twice as many follow, up to ``_SCAN_AHEAD``.
        """
        node = self._node(ino)
        match node:
            case _File(download=download):
                if self._content.known_size(download.id) is None:
                    self._notice_probe(node)
                elif self._scan is not None:
                    self._follow_scan(self._scan, node)
                return self._attributes(node, await self._known_size(download.id))
            case _BuildJson(build=build):
                return self._attributes(node, len(views.build_json(await self._record(build))))
            case _Latest(group=group):
                await self._latest(group)
            case _:
                pass
        return self._attributes(node)

    def _notice_probe(self, node: _File) -> None:
        now = self._timer()
        build_id, download_id = node.build.id, node.download.id
        last = self._last_probe
        self._last_probe = (build_id, download_id, now)
        if last is None or last[0] != build_id or last[1] == download_id:
            return
        if now - last[2] > _SCAN_WINDOW:
            return
        listing = self._listings.peek(build_id)
        if listing is not None:
            names = list(listing)  # in name order, as ls and file managers stat
            scan = self._scan = _Scan(build_id, names, listing, seen=now)
            scan.horizon = bisect.bisect_left(names, node.name)
            self._probe_ahead(scan)

    def _follow_scan(self, scan: _Scan, node: _File) -> None:
        """A stat of a file whose size is known: probe on if the scan nears its horizon."""
        if node.build.id != scan.build_id:
            return
        scan.seen = self._timer()
        if scan.horizon >= len(scan.names):
            return
        if bisect.bisect_left(scan.names, node.name) >= scan.horizon - scan.given // 2:
            self._probe_ahead(scan)

    def _probe_ahead(self, scan: _Scan) -> None:
        ahead = scan.names[scan.horizon : scan.horizon + scan.step]
        scan.horizon += len(ahead)
        scan.given, scan.step = len(ahead), min(2 * scan.step, _SCAN_AHEAD)
        self._content.prefetch_sizes(scan.listing[name].id for name in ahead)

    async def snapshot(self, ino: int) -> DirSnapshot:
        """The entries of a directory, without probing any size; `entries_from` gives them
        with their attributes. The caller reports each entry it hands to the kernel with
        ``remember``."""
        node = self._node(ino)
        children = await self._children(node)
        for _, child in children:
            self._nodes.setdefault(child.ino, child)
        return DirSnapshot(node, children)

    async def listdir(self, ino: int) -> list[tuple[bytes, Attributes]]:
        """The entries of a directory with their attributes, without probing any size."""
        return self._current((await self.snapshot(ino)).entries)

    async def entries_from(
        self, snapshot: DirSnapshot, start: int
    ) -> list[tuple[bytes, Attributes]]:
        """The entries of ``snapshot`` to hand out from ``start`` on, with what is known of
        them now (the kernel takes as many as fit).

        In a build directory that someone goes through stat by stat (``ls -l``: a scan, see
        ``getattr``), the next ``_READDIR_BATCH`` files come with their sizes: probed
        concurrently, waited for, and then cached by the kernel, so that their stats do not
        reach this process. Otherwise at most ``_READDIR_UNKNOWN`` files of unknown size are
        handed out at once, so that a scan shows itself early: a plain ``ls`` probes nothing,
        it only reads in more steps. Should a probe fail, the scan goes on stat by stat,
        where each stat tells its own error."""
        window = snapshot.entries[start : start + _READDIR_WINDOW]
        directory = snapshot.directory
        if not isinstance(directory, _BuildDir):
            return self._current(window)
        files = [node.download.id if isinstance(node, _File) else None for _, node in window]
        unknown = [
            i for i, d in enumerate(files) if d is not None and self._content.known_size(d) is None
        ]
        if not unknown:
            return self._current(window)
        scan, now = self._scan, self._timer()
        if (
            scan is None
            or scan.build_id != directory.build.id
            or now - scan.seen > _SCAN_WINDOW
            or scan.failed
        ):
            end = unknown[_READDIR_UNKNOWN] if len(unknown) > _READDIR_UNKNOWN else len(window)
            return self._current(window[:end])
        scan.seen = now
        ahead = files[: _READDIR_BATCH + _SCAN_AHEAD]
        self._content.prefetch_sizes(d for d in ahead if d is not None)
        batch = [d for d in files[:_READDIR_BATCH] if d is not None]
        with trio.move_on_after(self.timeout):
            await self._content.wait_for_sizes(batch)
        if any(self._content.known_size(d) is None for d in batch):
            scan.failed = True
        return self._current(window[:_READDIR_BATCH])

    def _current(self, entries: list[tuple[bytes, _Node]]) -> list[tuple[bytes, Attributes]]:
        """``entries`` with their attributes as known now."""
        return [(name, self._attributes(node)) for name, node in entries]

    def remember(self, ino: int) -> None:
        """The kernel took a reference to ``ino`` (a readdirplus entry)."""
        self._lookups[ino] += 1

    def forget(self, ino: int, count: int) -> None:
        """The kernel dropped ``count`` references to ``ino``."""
        remaining = self._lookups[ino] - count
        if remaining > 0:
            self._lookups[ino] = remaining
            return
        del self._lookups[ino]
        if ino not in _FIXED:
            self._nodes.pop(ino, None)

    def is_dir(self, ino: int) -> bool:
        return self._attributes(self._node(ino)).is_dir

    async def readlink(self, ino: int) -> bytes:
        """The target of a link: ``../../builds/<id>``, or for ``latest`` the id of the
        group's newest FINISHED build (a sibling link), as of the cached listing."""
        match self._node(ino):
            case _BuildLink(build=build):
                return _link_target(build)
            case _Latest(group=group):
                return str((await self._latest(group)).id).encode()
            case _:
                raise NotASymlink(f"inode {ino} is not a symbolic link")

    async def xattrs(self, ino: int) -> dict[bytes, bytes]:
        """The extended attributes of a node: the API's fields of a build (on its
        directories, up to date like ``.build.json``), of a download (on its file and its
        unpacked directory), of a project or pattern; nothing elsewhere."""
        match self._node(ino):
            case _BuildDir(build=build) | _UnpackedBuild(build=build):
                record = await self._record(build)
                return views.xattrs("build", views.BUILD_FIELDS, record.raw)
            case _File(download=download) | _Archive(download=download):
                return views.xattrs("download", views.DOWNLOAD_FIELDS, download.raw)
            case _Group(group=group):
                return views.xattrs(group.kind, views.GROUP_FIELDS[group.kind], group.raw)
            case _:
                return {}

    async def getxattr(self, ino: int, name: bytes) -> bytes:
        """One extended attribute; ``NoSuchAttribute`` (ENODATA) when the node has none
        of that name, for instance a field the API left out or sent as null, and
        ``UnsupportedAttribute`` (ENOTSUP) outside the ``user.`` namespace."""
        # ls and file managers ask for ACLs and security labels: answered without I/O.
        if not name.startswith(b"user."):
            raise UnsupportedAttribute(f"no {name!r} attributes on this file system")
        value = (await self.xattrs(ino)).get(name) if name.startswith(views.XATTR_PREFIX) else None
        if value is None:
            raise NoSuchAttribute(f"no attribute {name!r} on inode {ino}")
        return value

    async def open(self, ino: int) -> OpenFile:
        """Nothing is fetched for a download or a member here: only ``read`` downloads.
        Their bytes never change, so the kernel may keep its page cache (``keep_cache``).
        ``.build.json`` is taken as it is now, for this handle to read."""
        node = self._node(ino)
        match node:
            case (
                _File(download=download)
                | _Member(archive=_Archive(download=download), entry=zipview.Entry(is_dir=False))
            ):
                self._content.hold(download.id)
                return OpenFile(ino, keep_cache=True, download_id=download.id)
            case _BuildJson(build=build):
                return OpenFile(ino, keep_cache=False, snapshot=await self._json_of(build))
            case _:
                raise IsADirectory(f"inode {ino} cannot be read: it is not a file")

    def close(self, opened: OpenFile) -> None:
        """The kernel released a handle that ``open`` gave."""
        if opened.download_id is not None:
            self._content.release(opened.download_id)

    async def read(self, ino: int, offset: int, length: int) -> bytes | memoryview:
        """Up to ``length`` bytes at ``offset``; fewer only at the end of the file. Perhaps
        a view of bytes in memory (see ``ContentStore.read_buffer``)."""
        node = self._node(ino)
        match node:
            case _File(download=download):
                await self._known_size(download.id)
                return await self._content.read_buffer(download.id, offset, length)
            case _Member(archive=archive, entry=entry) if not entry.is_dir:
                return await self._members.read(archive.download.id, entry, offset, length)
            case _BuildJson(build=build):
                return (await self._json_of(build))[offset : offset + length]
            case _:
                raise IsADirectory(f"inode {ino} cannot be read: it is not a file")

    async def _json_of(self, build: Build) -> bytes:
        return views.build_json(await self._record(build))

    def describe(self, ino: int) -> str:
        """A path for log lines; never raises."""
        node = self._nodes.get(ino)
        match node:
            case _Root():
                return "/"
            case _Builds():
                return "/builds"
            case _Unpacked():
                return "/unpacked"
            case _Groups(kind=kind):
                return _GROUPS_PATH[kind]
            case _BuildDir(build=build):
                return f"/builds/{build.id}"
            case _BuildJson(build=build):
                return f"/builds/{build.id}/.build.json"
            case _File(build=build, name=name):
                return f"/builds/{build.id}/{_show(name)}"
            case _Group(group=group):
                return f"{_GROUPS_PATH[group.kind]}/{_show(group.name)}"
            case _Latest(group=group):
                return f"{_GROUPS_PATH[group.kind]}/{_show(group.name)}/latest"
            case _BuildLink(build=build):
                return f"link to /builds/{build.id}"
            case _UnpackedBuild(build=build):
                return f"/unpacked/{build.id}"
            case _Archive(build=build, name=name):
                return f"/unpacked/{build.id}/{_show(name)}"
            case _Member(archive=archive, entry=entry):
                return f"/unpacked/{archive.build.id}/{_show(archive.name)}/{entry.path}"
            case _:
                return f"inode {ino}"

    @property
    def known_inodes(self) -> int:
        return len(self._nodes)


def _archive_position(node: _Archive | _Member) -> tuple[_Archive, int]:
    """The archive a directory is in, and its position in the archive's index."""
    if isinstance(node, _Archive):
        return node, 0
    return node.archive, node.entry.index


def _link_target(build: Build) -> bytes:
    return f"../../builds/{build.id}".encode()


def _show(name: bytes) -> str:
    return name.decode("utf-8", "backslashreplace")


def _parse_id(name: bytes) -> int | None:
    """An id as a directory shows it: decimal digits, no sign, no leading zero."""
    if not name.isdigit() or (name.startswith(b"0") and name != b"0"):
        return None
    value = int(name)
    return value if value < _ID_LIMIT else None

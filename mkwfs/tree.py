"""The file tree, without FUSE: resolve names, list directories, stat, read.

::

    /                       ROOT_INODE
    └── builds/             BUILDS_INODE            one directory per build (GET /builds)
        └── <build id>/     BUILD_BASE + build id   its downloads (GET /downloads?build_id=)
            └── <name>      FILE_BASE + download id the body, fetched lazily on read

Inode numbers derive from the API's ids, so they are stable across listings and remounts
and never reused for something else (tools such as rsync, tar and find rely on that).

Directory listings are cached for ``dir_ttl`` seconds; a name missing from a cached listing
is answered ``NoSuchEntry`` without a request. Attributes carry their own timeouts for the
kernel: a file whose size is not known yet is reported with size 0 and an attribute timeout
of 0, so the kernel asks ``getattr`` (which probes the true size) before it uses the size
for ``stat`` or ``read``. A plain directory listing thus never costs a size probe.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import trio

from mkwfs.api import ApiClient
from mkwfs.cache import AsyncTTLCache
from mkwfs.content import ContentStore
from mkwfs.errors import IsADirectory, NoSuchEntry, NotADirectory
from mkwfs.models import Build, Download
from mkwfs.names import file_names

ROOT_INODE = 1
BUILDS_INODE = 2
BUILD_BASE = 1 << 40
FILE_BASE = 2 << 40
_ID_LIMIT = 1 << 40

BUILDS_NAME = b"builds"

#: Seconds between two size probes in one build that make it look like a directory scan.
_SCAN_WINDOW = 2.0


@dataclass(frozen=True)
class Attributes:
    ino: int
    is_dir: bool
    size: int
    mtime: float
    nlink: int
    #: Seconds the kernel may keep these attributes (0: ask again before using them).
    attr_timeout: float
    #: Seconds the kernel may keep the name -> inode mapping.
    entry_timeout: float


@dataclass(frozen=True)
class _Root:
    ino: int = ROOT_INODE


@dataclass(frozen=True)
class _Builds:
    ino: int = BUILDS_INODE


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


_Node = _Root | _Builds | _BuildDir | _File

#: A build's files: unique name -> download, in download id order.
Listing = dict[bytes, Download]


def build_inode(build_id: int) -> int:
    return BUILD_BASE + build_id


def file_inode(download_id: int) -> int:
    return FILE_BASE + download_id


class Tree:
    """What the mount shows, in terms of inodes and names. Raises only ``MkwfsError``."""

    def __init__(
        self,
        api: ApiClient,
        content: ContentStore,
        *,
        dir_ttl: float = 60.0,
        attr_ttl: float = 60.0,
        timer: Callable[[], float] = trio.current_time,
        mount_time: float | None = None,
    ) -> None:
        self._api = api
        self._content = content
        self.dir_ttl = dir_ttl
        self.attr_ttl = attr_ttl
        self._mount_time = time.time() if mount_time is None else mount_time
        self._builds = AsyncTTLCache[None, dict[int, Build]](ttl=dir_ttl, maxsize=1, timer=timer)
        self._listings = AsyncTTLCache[int, Listing](ttl=dir_ttl, maxsize=1024, timer=timer)
        self._nodes: dict[int, _Node] = {ROOT_INODE: _Root(), BUILDS_INODE: _Builds()}
        self._lookups: Counter[int] = Counter()
        self._timer = timer
        #: (build id, download id, time) of the last getattr that needed a size probe.
        self._last_probe: tuple[int, int, float] | None = None

    # -- the API, cached ---------------------------------------------------------------

    async def _all_builds(self) -> dict[int, Build]:
        async def load() -> dict[int, Build]:
            builds = await self._api.list_builds()
            return {b.id: b for b in builds if 0 <= b.id < _ID_LIMIT}

        return await self._builds.get(None, load)

    async def _listing(self, build_id: int) -> Listing:
        async def load() -> Listing:
            downloads = await self._api.list_downloads(build_id)
            mine = [d for d in downloads if d.build_id in (None, build_id) and d.id < _ID_LIMIT]
            await self._content.load_stored_sizes(d.id for d in mine)
            return dict(file_names(mine))

        return await self._listings.get(build_id, load)

    def seed_builds(self, builds: list[Build]) -> None:
        """Use a build list fetched elsewhere (the startup check) as the cached one."""
        self._builds.put(None, {b.id: b for b in builds if 0 <= b.id < _ID_LIMIT})

    def invalidate(self) -> None:
        """Forget every cached listing (the next access asks the API again)."""
        self._builds.invalidate()
        self._listings.invalidate()

    # -- nodes -------------------------------------------------------------------------

    def _node(self, ino: int) -> _Node:
        try:
            return self._nodes[ino]
        except KeyError:
            raise NoSuchEntry(f"inode {ino} is not known") from None

    def _fresh_build(self, build: Build) -> Build:
        """The newest record of a build that is cached, without a request."""
        builds = self._builds.peek(None)
        return builds.get(build.id, build) if builds is not None else build

    async def _children(self, node: _Node) -> list[tuple[bytes, _Node]]:
        match node:
            case _Root():
                return [(BUILDS_NAME, self._nodes[BUILDS_INODE])]
            case _Builds():
                builds = await self._all_builds()
                return [
                    (str(i).encode(), _BuildDir(build_inode(i), builds[i])) for i in sorted(builds)
                ]
            case _BuildDir(build=build):
                listing = await self._listing(build.id)
                return [
                    (name, _File(file_inode(d.id), d, build, name)) for name, d in listing.items()
                ]
            case _:
                raise NotADirectory(f"inode {node.ino} is a file")

    async def _child(self, node: _Node, name: bytes) -> _Node:
        match node:
            case _Root():
                if name == BUILDS_NAME:
                    return self._nodes[BUILDS_INODE]
            case _Builds():
                build_id = _parse_id(name)
                if build_id is not None:
                    build = (await self._all_builds()).get(build_id)
                    if build is not None:
                        return _BuildDir(build_inode(build_id), build)
            case _BuildDir(build=build):
                download = (await self._listing(build.id)).get(name)
                if download is not None:
                    return _File(file_inode(download.id), download, build, name)
            case _:
                raise NotADirectory(f"inode {node.ino} is a file")
        raise NoSuchEntry(f"no {name!r} in inode {node.ino}")

    # -- attributes --------------------------------------------------------------------

    def _attributes(self, node: _Node, size: int | None = None) -> Attributes:
        match node:
            case _Root() | _Builds():
                return self._dir_attributes(node.ino, self._mount_time)
            case _BuildDir(build=build):
                return self._dir_attributes(node.ino, self._fresh_build(build).mtime)
            case _File(download=download, build=build):
                if size is None:
                    size = self._content.known_size(download.id)
                return Attributes(
                    ino=node.ino,
                    is_dir=False,
                    size=size or 0,
                    mtime=self._fresh_build(build).mtime,
                    nlink=1,
                    attr_timeout=self.attr_ttl if size is not None else 0.0,
                    entry_timeout=self.dir_ttl,
                )

    def _dir_attributes(self, ino: int, mtime: float) -> Attributes:
        return Attributes(
            ino=ino,
            is_dir=True,
            size=0,
            mtime=mtime,
            nlink=2,
            attr_timeout=self.attr_ttl,
            entry_timeout=self.dir_ttl,
        )

    # -- operations --------------------------------------------------------------------

    async def lookup(self, parent: int, name: bytes) -> Attributes:
        """Resolve ``name`` in directory ``parent``; counts one kernel lookup of the result."""
        child = await self._child(self._node(parent), name)
        self._nodes.setdefault(child.ino, child)
        self._lookups[child.ino] += 1
        return self._attributes(child)

    async def getattr(self, ino: int) -> Attributes:
        """Attributes with the true size: a file's size is probed if not known yet.

        When two files of one build need a probe within ``_SCAN_WINDOW`` seconds, someone is
        going through the directory (``ls -l``, a file manager): the sizes of all its files
        are then probed concurrently in the background, instead of one stat at a time.
        """
        node = self._node(ino)
        if not isinstance(node, _File):
            return self._attributes(node)
        download_id = node.download.id
        if self._content.known_size(download_id) is None:
            self._notice_probe(node)
        return self._attributes(node, await self._content.size(download_id))

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
            ordered = sorted(listing.items())  # the order ls and file managers stat in
            self._content.prefetch_sizes(d.id for _, d in ordered)

    async def listdir(self, ino: int) -> list[tuple[bytes, Attributes]]:
        """The entries of a directory, without probing any size. The caller reports each
        entry it hands to the kernel with ``remember``."""
        node = self._node(ino)
        entries: list[tuple[bytes, Attributes]] = []
        for name, child in await self._children(node):
            self._nodes.setdefault(child.ino, child)
            entries.append((name, self._attributes(child)))
        return entries

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
        if ino not in (ROOT_INODE, BUILDS_INODE):
            self._nodes.pop(ino, None)

    def is_dir(self, ino: int) -> bool:
        return not isinstance(self._node(ino), _File)

    def download_id(self, ino: int) -> int:
        node = self._node(ino)
        if not isinstance(node, _File):
            raise IsADirectory(f"inode {ino} is a directory")
        return node.download.id

    async def read(self, ino: int, offset: int, length: int) -> bytes:
        return await self._content.read(self.download_id(ino), offset, length)

    def describe(self, ino: int) -> str:
        """A path for log lines; never raises."""
        match self._nodes.get(ino):
            case _Root():
                return "/"
            case _Builds():
                return "/builds"
            case _BuildDir(build=build):
                return f"/builds/{build.id}"
            case _File(build=build, name=name):
                return f"/builds/{build.id}/{name.decode('utf-8', 'backslashreplace')}"
            case _:
                return f"inode {ino}"

    @property
    def known_inodes(self) -> int:
        return len(self._nodes)


def _parse_id(name: bytes) -> int | None:
    """A build id as the directory shows it: decimal digits, no sign, no leading zero."""
    if not name.isdigit() or (name.startswith(b"0") and name != b"0"):
        return None
    value = int(name)
    return value if value < _ID_LIMIT else None

"""The file tree, without FUSE: the operations the FUSE edge calls, by inode and name.

::

    /                               ROOT_INODE          builds.Root
    ├── builds/                     BUILDS_INODE        builds.BuildsDir (GET /builds)
    │   └── <build id>/             BUILD_BASE          builds.BuildDir (GET /downloads?build_id=)
    │       ├── .build.json         BUILD_JSON_BASE     builds.BuildJson (GET /builds/:id)
    │       └── <name>              FILE_BASE           builds.File: the body, fetched on read
    ├── projects/                   PROJECTS_INODE      groups.GroupsDir
    │   └── <project name>/         PROJECT_BASE        groups.GroupDir (GET /builds?project_id=)
    │       ├── <build id>          BUILD_LINK_BASE     groups.BuildLink -> ../../builds/<id>
    │       └── latest              PROJECT_LATEST_BASE groups.Latest -> <newest FINISHED id>
    ├── patterns/                   PATTERNS_INODE      the same by pattern (?pattern_id=)
    │   └── <pattern name>/         PATTERN_BASE        (links as above, PATTERN_LATEST_BASE)
    └── unpacked/                   UNPACKED_INODE      unpacked.UnpackedDir
        └── <build id>/             UNPACKED_BUILD_BASE unpacked.UnpackedBuild
            └── <name>/             ARCHIVE_BASE        unpacked.ArchiveDir: the ZIP's members
                └── ...             MEMBER_BASE..       unpacked.MemberDir, unpacked.MemberFile

Each kind of node is one class behind ``node.Node`` (``attributes``, ``lookup``, ``list``,
...); the ``Tree`` keeps the nodes the kernel knows and counts its references. Inode numbers
are stable and never reused (``inodes``). Facts come from the catalog
(``mkwfs.catalog.listings.Catalog``: what is cached for how long, stale-if-error) and bodies
and sizes from the content store.

A name missing from a cached listing is answered ``NoSuchEntry`` without a request, and so
is every name desktops probe for (``.hidden``, ``desktop.ini``, ...; see
``names.is_probe_name``) unless it is in an archive whose index is already read. A download
whose size is not known yet is reported with size 0 and an attribute timeout of 0, so the
kernel asks ``getattr`` (which probes the true size) before it uses the size for ``stat`` or
``read``. A plain directory listing thus never costs a size probe, and browsing never a body;
``ls -l`` is seen and its sizes probed ahead (``scan``).

Failures: every request the tree makes for an operation (a listing, a build record, a size
probe; retries included) is bounded by ``timeout`` seconds, after which it fails with
``TransportError`` (EIO); an operation makes at most one such request, besides the reads of
a body, which fail once their bytes stop coming for the content store's ``stall_timeout``.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import trio

from mkwfs.catalog.listings import Catalog
from mkwfs.catalog.stale import Staleness
from mkwfs.catalog.store import FactStore
from mkwfs.content.store import ContentStore
from mkwfs.remote.api import ApiClient
from mkwfs.remote.errors import NoSuchAttribute, NoSuchEntry, NotADirectory, UnsupportedAttribute
from mkwfs.remote.models import Build
from mkwfs.tree import views
from mkwfs.tree.attributes import Attributes, Kind, OpenFile
from mkwfs.tree.builds import BUILD_JSON_NAME, BuildsDir, Root
from mkwfs.tree.context import REQUESTER, Context, Listing, SizeProbes
from mkwfs.tree.groups import LATEST_NAME, GroupsDir
from mkwfs.tree.inodes import (
    ARCHIVE_BASE,
    BUILD_BASE,
    BUILD_JSON_BASE,
    BUILD_LINK_BASE,
    BUILDS_INODE,
    FILE_BASE,
    ID_LIMIT,
    MEMBER_BASE,
    PATTERN_BASE,
    PATTERN_LATEST_BASE,
    PATTERNS_INODE,
    PROJECT_BASE,
    PROJECT_LATEST_BASE,
    PROJECTS_INODE,
    ROOT_INODE,
    UNPACKED_BUILD_BASE,
    UNPACKED_INODE,
    build_inode,
    file_inode,
)
from mkwfs.tree.names import is_probe_name
from mkwfs.tree.node import Entries, Node
from mkwfs.tree.scan import READDIR_WINDOW
from mkwfs.tree.unpacked import UnpackedDir

__all__ = [
    "ARCHIVE_BASE", "BUILDS_INODE", "BUILDS_NAME", "BUILD_BASE", "BUILD_JSON_BASE",
    "BUILD_JSON_NAME", "BUILD_LINK_BASE", "FILE_BASE", "LATEST_NAME", "MEMBER_BASE",
    "PATTERNS_INODE", "PATTERNS_NAME", "PATTERN_BASE", "PATTERN_LATEST_BASE", "PROJECTS_INODE",
    "PROJECTS_NAME", "PROJECT_BASE", "PROJECT_LATEST_BASE", "ROOT_INODE", "UNPACKED_BUILD_BASE",
    "UNPACKED_INODE", "UNPACKED_NAME", "Attributes", "DirSnapshot", "Kind", "Listing",
    "OpenFile", "Tree", "build_inode", "file_inode",
]  # fmt: skip

BUILDS_NAME = b"builds"
PROJECTS_NAME = b"projects"
PATTERNS_NAME = b"patterns"
UNPACKED_NAME = b"unpacked"


@dataclass(frozen=True)
class DirSnapshot:
    """A directory's entries as a readdir handle keeps them (`Tree.snapshot`): names, and
    what they name, whose attributes are taken as they are handed out (`entries_from`)."""

    directory: Node
    entries: Entries


def _fixed_nodes(ctx: Context) -> dict[int, Node]:
    """The root and the directories under it, by inode: always known to the kernel."""
    top: dict[bytes, Node] = {
        BUILDS_NAME: BuildsDir(ctx, BUILDS_INODE),
        PATTERNS_NAME: GroupsDir(ctx, PATTERNS_INODE, "pattern"),
        PROJECTS_NAME: GroupsDir(ctx, PROJECTS_INODE, "project"),
        UNPACKED_NAME: UnpackedDir(ctx, UNPACKED_INODE),
    }
    return {node.ino: node for node in [Root(ctx, ROOT_INODE, top), *top.values()]}


class Tree:
    """What the mount shows, in terms of inodes and names. Raises only ``MkwfsError``.

    ``final_ttl`` defaults to a day, ``live_ttl`` to ``min(dir_ttl, 5)`` seconds (see
    ``Catalog``); ``timeout`` bounds each request (see the module docstring); ``store``
    keeps the catalog's last good listings (memory when None).
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
        size_probes: SizeProbes = "ahead",
        store: FactStore | None = None,
    ) -> None:
        self.timeout = timeout
        self.dir_ttl = dir_ttl
        self.attr_ttl = attr_ttl
        self.live_ttl = min(dir_ttl, 5.0) if live_ttl is None else live_ttl
        self.catalog = Catalog(
            api,
            dir_ttl=dir_ttl,
            final_ttl=final_ttl,
            live_ttl=self.live_ttl,
            timeout=timeout,
            id_limit=ID_LIMIT,
            timer=timer,
            store=store,
        )
        self._content = content
        ctx = Context(
            self.catalog,
            content,
            dir_ttl=dir_ttl,
            attr_ttl=attr_ttl,
            mount_time=time.time() if mount_time is None else mount_time,
            size_probes=size_probes,
            timer=timer,
        )
        self._ctx = ctx
        self._fixed = _fixed_nodes(ctx)
        self._nodes: dict[int, Node] = dict(self._fixed)
        self._lookups: Counter[int] = Counter()

    @property
    def size_probes(self) -> SizeProbes:
        """When sizes are probed with a HEAD (``--size-probes``)."""
        return self._ctx.size_probes

    @property
    def staleness(self) -> Staleness:
        """Whether listings are served stale because the server fails (``mkwfs status``)."""
        return self.catalog.staleness

    def seed_builds(self, builds: list[Build]) -> None:
        """Use a build list fetched elsewhere (the startup check) as the cached one."""
        self.catalog.seed_builds(builds)

    def invalidate(self, ino: int | None = None) -> None:
        """Forget the cached listings (the next access asks the API again): every one, or
        those that the node ``ino`` and what is below it show (a build's files, a group's
        builds; the root or an inode the tree does not know: every one). The last good
        listings stay for stale-if-error; archive indexes stay: a download's bytes never
        change."""
        node = None if ino is None else self._nodes.get(ino)
        if node is None:
            self.catalog.invalidate()
        else:
            node.refresh()

    def _node(self, ino: int) -> Node:
        try:
            return self._nodes[ino]
        except KeyError:
            raise NoSuchEntry(f"inode {ino} is not known") from None

    # -- names and directories ---------------------------------------------------------

    async def lookup(self, parent: int, name: bytes) -> Attributes:
        """Resolve ``name`` in directory ``parent``; counts one kernel lookup of the result.
        A name desktops probe for costs no request (see the module docstring)."""
        node = self._node(parent)
        if is_probe_name(name) and not node.holds_probe_names():
            if not node.attributes().is_dir:
                raise NotADirectory(f"inode {parent} is not a directory")
            raise NoSuchEntry(f"{name!r} is a name desktops probe for")
        child = await node.lookup(name)
        self._nodes.setdefault(child.ino, child)
        self._lookups[child.ino] += 1
        return child.attributes()

    async def snapshot(self, ino: int) -> DirSnapshot:
        """The entries of a directory, without probing any size; `entries_from` gives them
        with their attributes. The caller reports each entry it hands to the kernel with
        ``remember``."""
        node = self._node(ino)
        children = await node.list()
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
        them now (the kernel takes as many as fit). In a build directory that someone goes
        through stat by stat, they come in batches with their sizes (see ``scan``)."""
        window = snapshot.entries[start : start + READDIR_WINDOW]
        return self._current(window[: await snapshot.directory.handout(window)])

    def _current(self, entries: Entries) -> list[tuple[bytes, Attributes]]:
        """``entries`` with their attributes as known now."""
        return [(name, node.attributes()) for name, node in entries]

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
        if ino not in self._fixed:
            self._nodes.pop(ino, None)

    # -- attributes --------------------------------------------------------------------

    async def getattr(self, ino: int, pid: int = 0) -> Attributes:
        """Attributes with the true size: a download's size is probed if not known yet
        (and a scan seen, see ``scan``); ``.build.json`` and ``latest`` are brought up to
        date. ``pid``: the process that asks (``--size-probes off`` tells a listing's stat
        from a reader's by it)."""
        token = REQUESTER.set(pid)
        try:
            return await self._node(ino).getattr()
        finally:
            REQUESTER.reset(token)

    def opened_dir(self, ino: int, pid: int) -> None:
        """Process ``pid`` opened directory ``ino`` (to list it)."""
        self._ctx.listers[ino] = pid

    def is_dir(self, ino: int) -> bool:
        return self._node(ino).attributes().is_dir

    async def readlink(self, ino: int) -> bytes:
        """The target of a link: ``../../builds/<id>``, or for ``latest`` the id of the
        group's newest FINISHED build (a sibling link), as of the cached listing."""
        return await self._node(ino).readlink()

    async def xattrs(self, ino: int) -> dict[bytes, bytes]:
        """The extended attributes of a node: the API's fields of a build (on its
        directories, up to date like ``.build.json``), of a download (on its file and its
        unpacked directory), of a project or pattern; nothing elsewhere."""
        return await self._node(ino).xattrs()

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

    # -- reading -----------------------------------------------------------------------

    async def open(self, ino: int) -> OpenFile:
        """Nothing is fetched for a download or a member here: only ``read`` downloads.
        Their bytes never change, so the kernel may keep its page cache (``keep_cache``).
        ``.build.json`` is taken as it is now, for this handle to read."""
        return await self._node(ino).open()

    def close(self, opened: OpenFile) -> None:
        """The kernel released a handle that ``open`` gave."""
        if opened.download_id is not None:
            self._content.release(opened.download_id)

    async def read(self, ino: int, offset: int, length: int) -> bytes | memoryview:
        """Up to ``length`` bytes at ``offset``; fewer only at the end of the file. Perhaps
        a view of bytes in memory (see ``ContentStore.read_buffer``)."""
        return await self._node(ino).read(offset, length)

    def describe(self, ino: int) -> str:
        """A path for log lines; never raises."""
        node = self._nodes.get(ino)
        return f"inode {ino}" if node is None else node.path()

    @property
    def known_inodes(self) -> int:
        return len(self._nodes)

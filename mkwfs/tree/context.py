"""What every node of the tree works with: the catalog and the content store, seen the way
the tree shows them (files by unique name, groups by safe name), and the tree's settings.

Names are derived from the catalog's facts once per fact: while the catalog hands out the
same listing object (cached, or the last good one), its names are not made again.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from contextvars import ContextVar
from typing import Generic, Literal, TypeVar

import cachetools
import trio

from mkwfs.catalog.listings import Catalog, GroupKind, GroupRecords
from mkwfs.content.store import ContentStore
from mkwfs.remote.errors import NoSuchEntry
from mkwfs.remote.models import Build, Download
from mkwfs.tree import views, zipview
from mkwfs.tree.archives import Archives
from mkwfs.tree.attributes import Attributes, Kind
from mkwfs.tree.inodes import ID_LIMIT
from mkwfs.tree.names import file_names
from mkwfs.tree.scan import Scanner

K = TypeVar("K", bound=Hashable)
S = TypeVar("S")
V = TypeVar("V")

#: A build's files: unique name -> download, in name order: the order a directory lists
#: them in, so ``ls -l`` stats them in the order a scan probes them.
Listing = dict[bytes, Download]
Groups = dict[bytes, views.Group]
#: When sizes are probed (``--size-probes``): ahead of an ``ls -l`` scan, only for the file
#: stat'ed, or never (a size is learnt from the GET that reads the body).
SizeProbes = Literal["ahead", "stat", "off"]
#: The process a request comes from (pyfuse3's ``ctx.pid``; 0 when not known), set by the
#: tree for the request it serves.
REQUESTER: ContextVar[int] = ContextVar("REQUESTER", default=0)


class _Derived(Generic[K, S, V]):
    """Views of facts, each kept while its fact is the very object it was made from."""

    def __init__(self, derive: Callable[[K, S], V], *, maxsize: int) -> None:
        self._derive = derive
        self._views: cachetools.LRUCache[K, tuple[S, V]] = cachetools.LRUCache(maxsize=maxsize)

    def of(self, key: K, fact: S) -> V:
        kept = self._views.get(key)
        if kept is not None and kept[0] is fact:
            return kept[1]
        view = self._derive(key, fact)
        self._views[key] = (fact, view)
        return view


def _listing(build_id: int, downloads: list[Download]) -> Listing:
    return dict(sorted(file_names(downloads)))


def _groups(kind: GroupKind, records: GroupRecords) -> Groups:
    return {g.name: g for g in views.groups(kind, records, ID_LIMIT)}


class Context:
    """The catalog and content as the nodes need them, and how attributes are made."""

    def __init__(
        self,
        catalog: Catalog,
        content: ContentStore,
        *,
        dir_ttl: float,
        attr_ttl: float,
        mount_time: float,
        size_probes: SizeProbes = "ahead",
        timer: Callable[[], float] = trio.current_time,
    ) -> None:
        self.catalog = catalog
        self.size_probes: SizeProbes = size_probes
        #: The process that last opened each directory (by inode): a stat from it is part
        #: of a listing (``ls -l``), not of an access to the file (``--size-probes off``).
        self.listers: cachetools.LRUCache[int, int] = cachetools.LRUCache(maxsize=4096)
        self.content = content
        self.dir_ttl = dir_ttl
        self.attr_ttl = attr_ttl
        self.mount_time = mount_time
        self.members = zipview.MemberReader(content)
        self.archives = Archives(content, self.known_size, timer=timer)
        self.scanner = Scanner(content, self.cached_listing, timeout=catalog.timeout, timer=timer)
        self._listings = _Derived[int, list[Download], Listing](_listing, maxsize=4096)
        self._groups = _Derived[GroupKind, GroupRecords, Groups](_groups, maxsize=2)

    # -- facts, as the tree shows them -------------------------------------------------

    async def known_size(self, download_id: int) -> int:
        """The size of a download, probed (bounded) if not known yet."""
        size = self.content.known_size(download_id)
        if size is None:
            size = await self.catalog.bounded(lambda: self.content.size(download_id))
        return size

    async def listing(self, build: Build) -> Listing:
        """The build's files by unique name; the sizes on disk are known once it is."""
        downloads = await self.catalog.downloads(build)
        await self.content.load_stored_sizes()
        return self._listings.of(build.id, downloads)

    def cached_listing(self, build_id: int) -> Listing | None:
        """The build's files if a fresh listing is cached, without a request."""
        downloads = self.catalog.cached_downloads(build_id)
        return None if downloads is None else self._listings.of(build_id, downloads)

    async def groups(self, kind: GroupKind) -> Groups:
        """The projects or the patterns, by unique safe name."""
        return self._groups.of(kind, await self.catalog.groups(kind))

    async def builds_of(self, group: views.Group) -> dict[int, Build]:
        return await self.catalog.group_builds(group.kind, group.id)

    async def latest(self, group: views.Group) -> Build:
        """The group's newest FINISHED build; ``NoSuchEntry`` if it has none."""
        latest = views.newest_finished((await self.builds_of(group)).values())
        if latest is None:
            raise NoSuchEntry(f"{group.kind} {group.id} has no finished build")
        return latest

    def listing_stat(self, directory: int) -> bool:
        """Whether the stat being served comes from the process that opened ``directory``
        last (or from no known process): a listing's stat, not the start of a read."""
        pid = REQUESTER.get()
        return pid == 0 or self.listers.get(directory) == pid

    # -- attributes --------------------------------------------------------------------

    def dir_attributes(self, ino: int, mtime: float) -> Attributes:
        return Attributes(ino, Kind.DIR, 0, mtime, 2, self.attr_ttl, self.dir_ttl)

    def file_attributes(self, ino: int, size: int, mtime: float, timeout: float) -> Attributes:
        return Attributes(ino, Kind.FILE, size, mtime, 1, timeout, self.dir_ttl)

    def link_attributes(self, ino: int, target: bytes, mtime: float, timeout: float) -> Attributes:
        return Attributes(ino, Kind.SYMLINK, len(target), mtime, 1, timeout, self.dir_ttl)

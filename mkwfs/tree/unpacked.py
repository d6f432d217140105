"""``/unpacked``: a directory per build, in it a directory per download, in that the ZIP's
members as its central directory lists them (read once, see ``archives``). A member is read
through the content store's ranges of the archive (``zipview.MemberReader``).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

from mkwfs.remote.models import Build, Download
from mkwfs.tree import views, zipview
from mkwfs.tree.attributes import Attributes, OpenFile
from mkwfs.tree.builds import AllBuilds, build_xattrs
from mkwfs.tree.inodes import ARCHIVE_BASE, UNPACKED_BUILD_BASE
from mkwfs.tree.node import Directory, Entries, Node, show


@dataclass(frozen=True)
class UnpackedDir(AllBuilds):
    """``/unpacked``."""

    def path(self) -> str:
        return "/unpacked"

    def build_dir(self, build: Build) -> Node:
        return UnpackedBuild(self.ctx, UNPACKED_BUILD_BASE + build.id, build)


@dataclass(frozen=True)
class UnpackedBuild(Directory):
    """``/unpacked/<id>``: a directory per download of the build, by its unique name."""

    build: Build

    def path(self) -> str:
        return f"/unpacked/{self.build.id}"

    def refresh(self) -> None:
        self.ctx.catalog.invalidate_build(self.build.id)

    def mtime(self) -> float:
        return self.ctx.catalog.fresh_build(self.build).mtime

    def _archive(self, name: bytes, download: Download) -> ArchiveDir:
        return ArchiveDir(self.ctx, ARCHIVE_BASE + download.id, download, self.build, name)

    async def list(self) -> Entries:
        listing = await self.ctx.listing(self.build)
        return [(name, self._archive(name, d)) for name, d in listing.items()]

    async def child(self, name: bytes) -> Node | None:
        download = (await self.ctx.listing(self.build)).get(name)
        return None if download is None else self._archive(name, download)

    async def xattrs(self) -> dict[bytes, bytes]:
        return await build_xattrs(self.ctx, self.build)


@dataclass(frozen=True)
class _InArchive(Directory):
    """A directory inside an archive: the archive's own, or a member directory."""

    @abc.abstractmethod
    def position(self) -> tuple[ArchiveDir, int]:
        """The archive this directory is in, and its position in the archive's index."""

    async def list(self) -> Entries:
        archive, position = self.position()
        index = await archive.index()
        children = index.children.get(position, {})
        return [(name, archive.member(index, child)) for name, child in children.items()]

    async def child(self, name: bytes) -> Node | None:
        archive, position = self.position()
        index = await archive.index()
        child = index.children.get(position, {}).get(name)
        return None if child is None else archive.member(index, child)

    def holds_probe_names(self) -> bool:
        """Archives are shown as they are: once the index is read, any name may be in it."""
        archive, _ = self.position()
        return self.ctx.archives.cached(archive.download.id) is not None


@dataclass(frozen=True)
class ArchiveDir(_InArchive):
    """``/unpacked/<id>/<name>``: the top of a download's archive."""

    download: Download
    build: Build
    name: bytes

    def path(self) -> str:
        return f"/unpacked/{self.build.id}/{show(self.name)}"

    def mtime(self) -> float:
        return self.ctx.catalog.fresh_build(self.build).mtime

    def position(self) -> tuple[ArchiveDir, int]:
        return self, 0

    async def index(self) -> zipview.ArchiveIndex:
        return await self.ctx.archives.index(self.download.id, self.mtime)

    def member(self, index: zipview.ArchiveIndex, position: int) -> MemberDir | MemberFile:
        """The member at ``position`` of this archive's ``index``."""
        entry = index.entries[position]
        ino = self.ctx.archives.member_inode(self.download.id, position)
        if entry.is_dir:
            return MemberDir(self.ctx, ino, self, entry)
        return MemberFile(self.ctx, ino, self, entry)

    async def xattrs(self) -> dict[bytes, bytes]:
        return views.xattrs("download", views.DOWNLOAD_FIELDS, self.download.raw)


@dataclass(frozen=True)
class _Member(Node):
    """An entry of an archive's index, at its position there."""

    archive: ArchiveDir
    entry: zipview.Entry

    def path(self) -> str:
        return f"{self.archive.path()}/{self.entry.path}"


@dataclass(frozen=True)
class MemberDir(_InArchive, _Member):
    """A directory of an archive (listed by the archive, or implied by a member's path)."""

    def mtime(self) -> float:
        return self.entry.mtime

    def position(self) -> tuple[ArchiveDir, int]:
        return self.archive, self.entry.index


@dataclass(frozen=True)
class MemberFile(_Member):
    """A file of an archive, with the size and time its central directory gives."""

    def attributes(self) -> Attributes:
        entry = self.entry
        return self.ctx.file_attributes(self.ino, entry.size, entry.mtime, self.ctx.attr_ttl)

    async def open(self) -> OpenFile:
        download_id = self.archive.download.id
        self.ctx.content.hold(download_id)
        return OpenFile(self.ino, keep_cache=True, download_id=download_id)

    async def read(self, offset: int, length: int) -> bytes | memoryview:
        return await self.ctx.members.read(self.archive.download.id, self.entry, offset, length)

"""The root, ``/builds`` and what is in it: a directory per build, holding its downloads
and its ``.build.json``.

A build's files are listed in name order, as ``ls -l`` stats them (see ``scan``); a file's
size is reported as 0 with an attribute timeout of 0 until it is known, so the kernel asks
``getattr`` (which probes it) before it uses the size. Their times are the build's.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import assert_never

from mkwfs.remote.models import Build, Download
from mkwfs.tree import views
from mkwfs.tree.attributes import Attributes, OpenFile
from mkwfs.tree.context import Context
from mkwfs.tree.inodes import BUILD_JSON_BASE, build_inode, file_inode, parse_id
from mkwfs.tree.node import Directory, Entries, Node, show

BUILD_JSON_NAME = b".build.json"


@dataclass(frozen=True)
class Root(Directory):
    """``/``: the fixed directories under it, in the order they are listed."""

    top: Mapping[bytes, Node] = field(compare=False)

    def path(self) -> str:
        return "/"

    async def list(self) -> Entries:
        return list(self.top.items())

    async def child(self, name: bytes) -> Node | None:
        return self.top.get(name)


@dataclass(frozen=True)
class AllBuilds(Directory):
    """A directory of every build, named by id (``/builds``, ``/unpacked``)."""

    @abc.abstractmethod
    def build_dir(self, build: Build) -> Node:
        """The directory this one shows for ``build``."""

    async def list(self) -> Entries:
        builds = await self.ctx.catalog.builds()
        return [(str(i).encode(), self.build_dir(builds[i])) for i in sorted(builds)]

    async def child(self, name: bytes) -> Node | None:
        build_id = parse_id(name)
        if build_id is None:
            return None
        build = (await self.ctx.catalog.builds()).get(build_id)
        return None if build is None else self.build_dir(build)


@dataclass(frozen=True)
class BuildsDir(AllBuilds):
    """``/builds``."""

    def path(self) -> str:
        return "/builds"

    def build_dir(self, build: Build) -> Node:
        return BuildDir(self.ctx, build_inode(build.id), build)


async def build_xattrs(ctx: Context, build: Build) -> dict[bytes, bytes]:
    """A build's fields, as up to date as ``.build.json``."""
    record = await ctx.catalog.record(build)
    return views.xattrs("build", views.BUILD_FIELDS, record.raw)


@dataclass(frozen=True)
class BuildDir(Directory):
    """``/builds/<id>``: ``.build.json``, then the build's downloads by unique name."""

    build: Build

    def path(self) -> str:
        return f"/builds/{self.build.id}"

    def refresh(self) -> None:
        self.ctx.catalog.invalidate_build(self.build.id)

    def mtime(self) -> float:
        return self.ctx.catalog.fresh_build(self.build).mtime

    def _json(self) -> BuildJson:
        return BuildJson(self.ctx, BUILD_JSON_BASE + self.build.id, self.build)

    def _file(self, name: bytes, download: Download) -> File:
        return File(self.ctx, file_inode(download.id), download, self.build, name)

    async def list(self) -> Entries:
        listing = await self.ctx.listing(self.build)
        entries: Entries = [(BUILD_JSON_NAME, self._json())]
        entries += [(name, self._file(name, d)) for name, d in listing.items()]
        return entries

    async def child(self, name: bytes) -> Node | None:
        if name == BUILD_JSON_NAME:
            return self._json()
        download = (await self.ctx.listing(self.build)).get(name)
        return None if download is None else self._file(name, download)

    async def handout(self, entries: Entries) -> int:
        """In a scan, the next files with their sizes; else few of unknown size (``scan``).
        Without probes ahead (``--size-probes stat`` or ``off``), all of them."""
        if self.ctx.size_probes != "ahead":
            return len(entries)
        files = [node.download.id if isinstance(node, File) else None for _, node in entries]
        return await self.ctx.scanner.handout(self.build.id, files)

    async def xattrs(self) -> dict[bytes, bytes]:
        return await build_xattrs(self.ctx, self.build)


@dataclass(frozen=True)
class File(Node):
    """A download: its body, fetched lazily on read. The bytes never change, so the kernel
    may keep its page cache."""

    download: Download
    build: Build
    name: bytes

    def path(self) -> str:
        return f"/builds/{self.build.id}/{show(self.name)}"

    def refresh(self) -> None:
        self.ctx.catalog.invalidate_build(self.build.id)

    def attributes(self) -> Attributes:
        return self._sized(self.ctx.content.known_size(self.download.id))

    def _sized(self, size: int | None) -> Attributes:
        ctx = self.ctx
        timeout = ctx.attr_ttl if size is not None else 0.0
        mtime = ctx.catalog.fresh_build(self.build).mtime
        return ctx.file_attributes(self.ino, size or 0, mtime, timeout)

    async def getattr(self) -> Attributes:
        """With the true size, probed if not known yet (a scan probes ahead: ``scan``,
        unless ``--size-probes stat``). With ``--size-probes off``, a listing's stat (from
        the process that opened the build's directory: ``ls -l``, ``cp -r``) gets the size
        known, 0 with a zero attribute timeout until the body was read; any other stat is
        taken as the start of a read (``unzip`` takes the size from a stat before it
        opens): the body's GET starts, and its headers give the size."""
        match self.ctx.size_probes:
            case "off":
                if self.ctx.listing_stat(build_inode(self.build.id)):
                    return self.attributes()
            case "ahead":
                self.ctx.scanner.stat(self.build.id, self.download, self.name)
            case "stat":
                pass
            case other:
                assert_never(other)
        return self._sized(await self.ctx.known_size(self.download.id))

    async def xattrs(self) -> dict[bytes, bytes]:
        return views.xattrs("download", views.DOWNLOAD_FIELDS, self.download.raw)

    async def open(self) -> OpenFile:
        """A body of unknown size (``--size-probes off``) starts its GET here, whose headers
        tell the size before ``open`` returns: the kernel's next stat or ``lseek(SEEK_END)``
        (unzip) sees it. This handle passes every read on (``direct_io``): the kernel may
        still hold the size 0 it was told before."""
        download_id = self.download.id
        unknown = self.ctx.size_probes == "off" and self.ctx.content.known_size(download_id) is None
        if unknown:
            await self.ctx.known_size(download_id)
        self.ctx.content.hold(download_id)
        return OpenFile(self.ino, keep_cache=True, download_id=download_id, direct_io=unknown)

    async def read(self, offset: int, length: int) -> bytes | memoryview:
        """Perhaps a view of bytes in memory (see ``ContentStore.read_buffer``)."""
        await self.ctx.known_size(self.download.id)
        return await self.ctx.content.read_buffer(self.download.id, offset, length)


@dataclass(frozen=True)
class BuildJson(Node):
    """``.build.json``: the build object as the API sent it, indented; up to date while the
    build runs. A handle reads the bytes as they were at ``open``."""

    build: Build

    def path(self) -> str:
        return f"/builds/{self.build.id}/.build.json"

    def refresh(self) -> None:
        self.ctx.catalog.invalidate_build(self.build.id)

    def attributes(self) -> Attributes:
        return self._sized(None)

    def _sized(self, size: int | None) -> Attributes:
        ctx = self.ctx
        record = ctx.catalog.cached_record(self.build.id)
        if size is None and record is not None and record.has_indented_json:
            size = len(views.build_json(record))
        if record is None or size is None:
            # Encoding a build of many files takes milliseconds: a listing does not wait
            # for it, a stat of the file does (see getattr).
            mtime = ctx.catalog.fresh_build(self.build).mtime
            return ctx.file_attributes(self.ino, 0, mtime, 0)
        timeout = ctx.attr_ttl if record.is_final else 0.0
        return ctx.file_attributes(self.ino, size, record.mtime, timeout)

    async def _json(self) -> bytes:
        return views.build_json(await self.ctx.catalog.record(self.build))

    async def getattr(self) -> Attributes:
        return self._sized(len(await self._json()))

    async def open(self) -> OpenFile:
        return OpenFile(self.ino, keep_cache=False, snapshot=await self._json())

    async def read(self, offset: int, length: int) -> bytes | memoryview:
        return (await self._json())[offset : offset + length]

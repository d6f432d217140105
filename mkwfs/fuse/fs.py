"""The pyfuse3 edge: thin handlers over ``Tree``, and the one place errors become errnos.

pyfuse3's contract: a handler may raise only ``FUSEError``; anything else kills the mount.
Every handler therefore runs inside ``_fuse_errors``, which maps ``MkwfsError.errno`` and
logs anything unexpected as EIO. Everything that would change the tree answers EROFS.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NoReturn, cast

import pyfuse3
from pyfuse3 import (
    EntryAttributes,
    FileHandleT,
    FileInfo,
    FileNameT,
    FlagT,
    InodeT,
    ModeT,
    ReaddirToken,
    RequestContext,
    SetattrFields,
    StatvfsData,
    XAttrNameT,
)
from typing_extensions import override

from mkwfs.remote.errors import MkwfsError
from mkwfs.tree.tree import ROOT_INODE, Attributes, DirSnapshot, Kind, OpenFile, Tree

log = logging.getLogger(__name__)

assert ROOT_INODE == pyfuse3.ROOT_INODE

_NS = 1_000_000_000
#: Preferred I/O size reported in st_blksize: large reads from cp and friends.
_BLOCK_SIZE = 128 * 1024
#: Answers that are part of normal use (``ls`` asks for ACL xattrs no file has): no warning.
_ROUTINE_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ENODATA, errno.ENOTSUP})
_MODES = {
    Kind.DIR: stat.S_IFDIR | 0o555,
    Kind.FILE: stat.S_IFREG | 0o444,
    Kind.SYMLINK: stat.S_IFLNK | 0o777,
}


@contextmanager
def _fuse_errors(operation: str, tree: Tree, ino: int) -> Iterator[None]:
    """Turn every exception into ``FUSEError``, with a log line for what users must see."""
    try:
        yield
    except pyfuse3.FUSEError:
        raise
    except MkwfsError as exc:
        level = logging.DEBUG if exc.errno in _ROUTINE_ERRNOS else logging.WARNING
        log.log(level, "%s %s: %s", operation, tree.describe(ino), exc)
        raise pyfuse3.FUSEError(exc.errno) from exc
    except Exception:
        log.exception("%s %s: unexpected error", operation, tree.describe(ino))
        raise pyfuse3.FUSEError(errno.EIO) from None


@dataclass
class _OpenDir:
    inode: int
    #: The listing this handle serves, taken at its first readdir from offset 0.
    entries: DirSnapshot | None = None


def _read_only() -> NoReturn:
    raise pyfuse3.FUSEError(errno.EROFS)


class MkwfsOperations(pyfuse3.Operations):
    """Read-only FUSE operations for a ``Tree``."""

    def __init__(
        self,
        tree: Tree,
        *,
        uid: int | None = None,
        gid: int | None = None,
        umask: int = 0,
        on_init: Callable[[], None] | None = None,
    ) -> None:
        """``uid``/``gid`` own every entry (default: the mounting user); ``umask`` is taken
        off every mode (``--umask``); ``on_init`` is called when the kernel's first request
        (INIT) is answered, before any other."""
        super().__init__()
        self._tree = tree
        self._on_init = on_init
        self._uid = os.getuid() if uid is None else uid
        self._gid = os.getgid() if gid is None else gid
        self._umask = umask
        self._open_dirs: dict[int, _OpenDir] = {}
        self._open_files: dict[int, OpenFile] = {}
        self._next_handle = 1

    @override
    def init(self) -> None:
        # Called by libfuse while it handles INIT, which it answers right after.
        if self._on_init is not None:
            self._on_init()

    def _new_handle(self) -> FileHandleT:
        handle = self._next_handle
        self._next_handle += 1
        return FileHandleT(handle)

    def _entry(self, attrs: Attributes) -> EntryAttributes:
        entry = EntryAttributes()
        entry.st_ino = attrs.ino
        entry.generation = 0
        entry.entry_timeout = attrs.entry_timeout
        entry.attr_timeout = attrs.attr_timeout
        entry.st_mode = _MODES[attrs.kind] & ~self._umask
        entry.st_nlink = attrs.nlink
        entry.st_uid = self._uid
        entry.st_gid = self._gid
        entry.st_rdev = 0
        entry.st_size = attrs.size
        entry.st_blksize = _BLOCK_SIZE
        entry.st_blocks = (attrs.size + 511) // 512
        time_ns = int(attrs.mtime * _NS)
        entry.st_atime_ns = entry.st_mtime_ns = entry.st_ctime_ns = time_ns
        return entry

    # -- reading the tree ----------------------------------------------------------------

    @override
    async def lookup(
        self, parent_inode: InodeT, name: FileNameT, ctx: RequestContext
    ) -> EntryAttributes:
        """Counts one lookup of the inode returned (pyfuse3's rule); ``forget`` undoes it."""
        with _fuse_errors("lookup", self._tree, parent_inode):
            return self._entry(await self._tree.lookup(parent_inode, name))

    @override
    async def forget(self, inode_list: Sequence[tuple[InodeT, int]]) -> None:
        """May not raise at all, not even FUSEError."""
        for ino, count in inode_list:
            self._tree.forget(ino, count)

    @override
    async def getattr(self, inode: InodeT, ctx: RequestContext) -> EntryAttributes:
        with _fuse_errors("stat", self._tree, inode):
            return self._entry(await self._tree.getattr(inode, ctx.pid))

    @override
    async def opendir(self, inode: InodeT, ctx: RequestContext) -> FileHandleT:
        with _fuse_errors("opendir", self._tree, inode):
            if not self._tree.is_dir(inode):
                raise pyfuse3.FUSEError(errno.ENOTDIR)
            self._tree.opened_dir(inode, ctx.pid)
            handle = self._new_handle()
            self._open_dirs[handle] = _OpenDir(inode)
            return handle

    @override
    async def readdir(self, fh: FileHandleT, start_id: int, token: ReaddirToken) -> None:
        """Entries come from one snapshot per open handle, so offsets (``start_id``) stay
        valid however the listing changes meanwhile. Each entry the kernel accepts counts
        as a lookup (readdirplus); one that does not fit ends this call."""
        handle = self._open_dirs.get(fh)
        if handle is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        with _fuse_errors("readdir", self._tree, handle.inode):
            entries = handle.entries
            if entries is None or start_id == 0:
                entries = handle.entries = await self._tree.snapshot(handle.inode)
            ready = await self._tree.entries_from(entries, start_id)
            for index, (name, attrs) in enumerate(ready, start_id):
                if not pyfuse3.readdir_reply(token, name, self._entry(attrs), index + 1):
                    break
                self._tree.remember(attrs.ino)

    @override
    async def releasedir(self, fh: FileHandleT) -> None:
        self._open_dirs.pop(fh, None)

    @override
    async def readlink(self, inode: InodeT, ctx: RequestContext) -> FileNameT:
        with _fuse_errors("readlink", self._tree, inode):
            return FileNameT(await self._tree.readlink(inode))

    @override
    async def open(self, inode: InodeT, flags: FlagT, ctx: RequestContext) -> FileInfo:
        """Nothing is downloaded here, only in ``read``. A file whose bytes never change
        keeps the kernel's page cache across opens (``keep_cache``); a generated one
        (``.build.json``) is read from this handle's snapshot, past any size the kernel
        cached (``direct_io``), as is a body opened before its size was known."""
        with _fuse_errors("open", self._tree, inode):
            if flags & os.O_ACCMODE != os.O_RDONLY or flags & (os.O_TRUNC | os.O_APPEND):
                _read_only()
            opened = await self._tree.open(inode)
            handle = self._new_handle()
            self._open_files[handle] = opened
            return FileInfo(
                fh=handle,
                keep_cache=opened.keep_cache,
                direct_io=opened.snapshot is not None or opened.direct_io,
            )

    @override
    async def read(self, fh: FileHandleT, off: int, size: int) -> bytes:
        """Returns exactly ``size`` bytes except at the end of the file (no short reads)."""
        opened = self._open_files.get(fh)
        if opened is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        if opened.snapshot is not None:
            return opened.snapshot[off : off + size]
        with _fuse_errors("read", self._tree, opened.ino):
            data = await self._tree.read(opened.ino, off, size)
        # pyfuse3 replies from any contiguous buffer (PyObject_GetBuffer): a view of the
        # bytes in memory is sent without copying them into a bytes object first.
        return cast(bytes, data)

    @override
    async def release(self, fh: FileHandleT) -> None:
        opened = self._open_files.pop(fh, None)
        if opened is not None:
            self._tree.close(opened)

    @override
    async def statfs(self, ctx: RequestContext) -> StatvfsData:
        data = StatvfsData()
        data.f_bsize = _BLOCK_SIZE
        data.f_frsize = 4096
        data.f_blocks = data.f_bfree = data.f_bavail = 0
        data.f_files = self._tree.known_inodes
        data.f_ffree = data.f_favail = 0
        data.f_namemax = 255
        return data

    @override
    async def getxattr(self, inode: InodeT, name: XAttrNameT, ctx: RequestContext) -> bytes:
        """A missing attribute is ENODATA (pyfuse3's ENOATTR)."""
        with _fuse_errors("getxattr", self._tree, inode):
            return await self._tree.getxattr(inode, name)

    @override
    async def listxattr(self, inode: InodeT, ctx: RequestContext) -> Sequence[XAttrNameT]:
        with _fuse_errors("listxattr", self._tree, inode):
            return [XAttrNameT(name) for name in await self._tree.xattrs(inode)]

    # -- everything that would write: EROFS -----------------------------------------------

    @override
    async def setattr(
        self,
        inode: InodeT,
        attr: EntryAttributes,
        fields: SetattrFields,
        fh: FileHandleT | None,
        ctx: RequestContext,
    ) -> EntryAttributes:
        _read_only()

    @override
    async def mknod(
        self, parent_inode: InodeT, name: FileNameT, mode: ModeT, rdev: int, ctx: RequestContext
    ) -> EntryAttributes:
        _read_only()

    @override
    async def mkdir(
        self, parent_inode: InodeT, name: FileNameT, mode: ModeT, ctx: RequestContext
    ) -> EntryAttributes:
        _read_only()

    @override
    async def unlink(self, parent_inode: InodeT, name: FileNameT, ctx: RequestContext) -> None:
        _read_only()

    @override
    async def rmdir(self, parent_inode: InodeT, name: FileNameT, ctx: RequestContext) -> None:
        _read_only()

    @override
    async def symlink(
        self, parent_inode: InodeT, name: FileNameT, target: FileNameT, ctx: RequestContext
    ) -> EntryAttributes:
        _read_only()

    @override
    async def rename(
        self,
        parent_inode_old: InodeT,
        name_old: FileNameT,
        parent_inode_new: InodeT,
        name_new: FileNameT,
        flags: FlagT,
        ctx: RequestContext,
    ) -> None:
        _read_only()

    @override
    async def link(
        self, inode: InodeT, new_parent_inode: InodeT, new_name: FileNameT, ctx: RequestContext
    ) -> EntryAttributes:
        _read_only()

    @override
    async def write(self, fh: FileHandleT, off: int, buf: bytes) -> int:
        _read_only()

    @override
    async def create(
        self,
        parent_inode: InodeT,
        name: FileNameT,
        mode: ModeT,
        flags: FlagT,
        ctx: RequestContext,
    ) -> tuple[FileInfo, EntryAttributes]:
        _read_only()

    @override
    async def setxattr(
        self, inode: InodeT, name: XAttrNameT, value: bytes, ctx: RequestContext
    ) -> None:
        _read_only()

    @override
    async def removexattr(self, inode: InodeT, name: XAttrNameT, ctx: RequestContext) -> None:
        _read_only()

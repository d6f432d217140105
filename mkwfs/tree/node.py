"""The protocol every node of the tree follows, gcsfuse's inodes or ratarmount's
``MountSource`` in small: ``attributes`` (what is known without a request), ``lookup`` and
``list`` for a directory, and for the other kinds what applies to them. Each kind of
directory and file is one subclass (``builds``, ``groups``, ``unpacked``); what does not
apply to a kind raises the error a file system gives for it.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

from mkwfs.remote.errors import IsADirectory, NoSuchEntry, NotADirectory, NotASymlink
from mkwfs.tree.attributes import Attributes, OpenFile
from mkwfs.tree.context import Context

#: A directory's entries: names, in the order they are listed, and what they name.
Entries = list[tuple[bytes, "Node"]]


@dataclass(frozen=True)
class Node(abc.ABC):
    """One file, directory or link of the tree, by inode number. Raises only ``MkwfsError``."""

    ctx: Context = field(repr=False, compare=False)
    ino: int

    @abc.abstractmethod
    def attributes(self) -> Attributes:
        """The attributes as known now, without a request."""

    async def getattr(self) -> Attributes:
        """The attributes, brought up to date (a file's true size)."""
        return self.attributes()

    @abc.abstractmethod
    def path(self) -> str:
        """Where the node is, for log lines."""

    async def lookup(self, name: bytes) -> Node:
        """The entry ``name`` of this directory; ``NoSuchEntry`` if there is none."""
        raise NotADirectory(f"inode {self.ino} is not a directory")

    async def list(self) -> Entries:
        """The entries of this directory, without probing any size."""
        raise NotADirectory(f"inode {self.ino} is not a directory")

    def holds_probe_names(self) -> bool:
        """Whether a name desktops probe for (``names.is_probe_name``) may really be in
        this directory: only in an archive whose index is already read."""
        return False

    async def handout(self, entries: Entries) -> int:
        """How many of ``entries``, the next ones of this directory, a readdir hands out
        now (the kernel takes as many as fit)."""
        return len(entries)

    def refresh(self) -> None:
        """Drop the cached facts this node and what is below it show, so that the next
        access asks the API (``mkwfs refresh PATH``). By default: every fact."""
        self.ctx.catalog.invalidate()

    async def readlink(self) -> bytes:
        raise NotASymlink(f"inode {self.ino} is not a symbolic link")

    async def xattrs(self) -> dict[bytes, bytes]:
        """The extended attributes: the API's fields of what the node shows, if any."""
        return {}

    async def open(self) -> OpenFile:
        """How to serve reads of this file; nothing is fetched here."""
        raise IsADirectory(f"inode {self.ino} cannot be read: it is not a file")

    async def read(self, offset: int, length: int) -> bytes | memoryview:
        """Up to ``length`` bytes at ``offset``; fewer only at the end of the file."""
        raise IsADirectory(f"inode {self.ino} cannot be read: it is not a file")


@dataclass(frozen=True)
class Directory(Node):
    """A directory: ``lookup`` is ``child`` or ``NoSuchEntry``."""

    @abc.abstractmethod
    async def child(self, name: bytes) -> Node | None:
        """The entry ``name``, or None."""

    async def lookup(self, name: bytes) -> Node:
        child = await self.child(name)
        if child is None:
            raise NoSuchEntry(f"no {name!r} in {self.path()}")
        return child

    def attributes(self) -> Attributes:
        return self.ctx.dir_attributes(self.ino, self.mtime())

    def mtime(self) -> float:
        return self.ctx.mount_time


def show(name: bytes) -> str:
    """A name for log lines."""
    return name.decode("utf-8", "backslashreplace")

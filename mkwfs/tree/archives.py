"""The central directories of the archives shown under ``/unpacked``, and their members'
inode numbers.

The first time an archive is indexed it gets a block of inode numbers from a counter that
only grows, and a member's inode is the block's start plus its position in the index, so
it is stable for the life of the mount and never recycled. An index is read again only if
it was dropped from memory (``INDEXES`` are kept; a re-read costs only disk reads: the tail
is cached), and a block is given again only if the index has another length.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable

import trio

from mkwfs.catalog.cache import AsyncTTLCache
from mkwfs.content.store import ContentStore
from mkwfs.tree import zipview
from mkwfs.tree.inodes import MEMBER_BASE

#: Archive indexes kept in memory.
INDEXES = 64


class Archives:
    """Archive indexes by download id, read through ``content`` once a download's size is
    known (``known_size`` probes it if need be)."""

    def __init__(
        self,
        content: ContentStore,
        known_size: Callable[[int], Awaitable[int]],
        *,
        timer: Callable[[], float] = trio.current_time,
    ) -> None:
        self._content = content
        self._known_size = known_size
        self._indexes = AsyncTTLCache[int, zipview.ArchiveIndex](
            ttl=math.inf, maxsize=INDEXES, timer=timer
        )
        #: Download id -> (first inode, count) of its archive's member block.
        self._blocks: dict[int, tuple[int, int]] = {}
        self._next_inode = MEMBER_BASE

    def cached(self, download_id: int) -> zipview.ArchiveIndex | None:
        """The archive's index if it is in memory, without reading it."""
        return self._indexes.peek(download_id)

    async def index(self, download_id: int, mtime: Callable[[], float]) -> zipview.ArchiveIndex:
        """The archive's index; ``mtime()`` dates its root and the directories it implies."""

        async def load() -> zipview.ArchiveIndex:
            await self._known_size(download_id)
            index = await zipview.read_index(self._content, download_id, mtime=mtime())
            block = self._blocks.get(download_id)
            if block is None or block[1] != len(index.entries):
                self._blocks[download_id] = (self._next_inode, len(index.entries))
                self._next_inode += len(index.entries)
            return index

        return await self._indexes.get(download_id, load)

    def member_inode(self, download_id: int, position: int) -> int:
        """The inode of the member at ``position`` of an archive already indexed."""
        first, _ = self._blocks[download_id]
        return first + position

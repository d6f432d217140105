"""The state of one body in progress (``Body``) and of each fetch running for it (``Fetch``),
shared by the read path, the fetcher and the disk store."""

from __future__ import annotations

import trio

from mkwfs.content.config import ContentConfig
from mkwfs.content.extents import Extents
from mkwfs.content.planner import ReadPlanner
from mkwfs.content.recent import RecentBytes
from mkwfs.remote.errors import MkwfsError


class Fetch:
    """One range being fetched: ``[start, end)``, or from ``start`` to the end of the body."""

    def __init__(self, start: int, end: int | None) -> None:
        self.start = start
        self.end = end
        #: The next byte to write; everything in ``[start, position)`` is on disk.
        self.position = start
        #: The next byte to come from the network; everything in ``[start, arrived)`` has
        #: arrived (in the recent bytes, on its way to the disk, or on it). The disk writer
        #: may lag it by megabytes.
        self.arrived = start
        self.done = False
        self.idle = False
        self.error: MkwfsError | None = None

    def serves(self, offset: int, join_distance: int, front: int | None = None) -> bool:
        """Whether the byte at ``offset`` comes soon from this fetch: it arrived, or comes
        within ``join_distance`` bytes of its ``front`` (by default what arrived). Judged by
        what arrived, not by what is on disk, so that a reader at the front of the stream
        keeps it however far the disk lags."""
        reach = self.arrived if front is None else front
        return (
            not self.done
            and self.start <= offset
            and (self.end is None or offset < self.end)
            and offset - reach <= join_distance
        )


class Body:
    """A body not yet complete on disk, while something reads or fetches it."""

    def __init__(
        self, download_id: int, fd: int, extents: Extents, size: int | None, config: ContentConfig
    ) -> None:
        self.download_id = download_id
        self.fd = fd
        self.extents = extents
        self.size = size
        self.fetches: list[Fetch] = []
        self.planner = ReadPlanner(config)
        #: The furthest byte any reader asked for: open-ended fetches stay near it.
        self.demand = 0
        #: Bytes on disk as last recorded in the ``.map`` file.
        self.mapped = extents.total
        self.users = 0
        #: Whether a map is being recorded in the background (see ``DiskStore.map_soon``).
        self.mapping = False
        self.recent = RecentBytes(config.recent_limit)
        #: Set while the body is being finished or closed; ``rested`` fires after.
        self.resting = False
        self.rest_planned = False
        self.finishing = False
        self.rested = trio.Event()
        self._changed = trio.Event()

    @property
    def complete(self) -> bool:
        return self.size is not None and self.extents.covers(0, self.size)

    def want(self, end: int) -> None:
        """A reader asked for the bytes up to ``end``: an open-ended fetch may go on."""
        if end > self.demand:
            self.demand = end
            self.notify()

    def notify(self) -> None:
        """Wake whoever waits for this body to change (bytes, fetches, demand)."""
        self._changed.set()
        self._changed = trio.Event()

    async def changed(self) -> None:
        await self._changed.wait()

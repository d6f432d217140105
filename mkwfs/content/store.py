"""Download bodies: lazy, streamed to disk, fetched once, served as their bytes arrive.

Nothing is fetched until ``read`` (or ``size``, on a server that tells a size only with the
body). A download id's bytes never change, so what is on disk is served for good.

A read waits for a running fetch that is about to deliver its bytes; otherwise it starts
one, of the range the planner (``planner.py``) chooses. The rooms behind this facade:

- ``mkwfs.catalog.sizes``: the sizes, their probes and the size log;
- ``planner``: which range to fetch for a read (pure);
- ``fetcher``: the GETs, their retries and resumes; ``recent``: the bytes that last arrived;
  a small body of known size not on disk goes whole in one GET (``fetch_small``), served
  from memory while the disk writes it in the background;
- ``disk``: ``.part``/``.map`` files, settling and renames; ``writer``: the disk writes;
  ``eviction``: the bound on the cache.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from mkwfs.catalog.sizes import SizeRegistry
from mkwfs.content.body import Body
from mkwfs.content.config import ContentConfig
from mkwfs.content.disk import DiskStore
from mkwfs.content.fetcher import EVERYTHING, Fetcher
from mkwfs.content.ziphints import TAIL_SEARCH, central_directory, member_boundaries
from mkwfs.remote.api import ApiClient
from mkwfs.remote.errors import ContentError


@dataclass
class ContentStats:
    """Counters for ``mkwfs status``."""

    #: Fetches started (each is one GET of a body, or of a range of one), retries included.
    transfers: int = 0
    #: Body bytes received from the server.
    bytes_received: int = 0
    #: Fetches that ended in an error after their retries.
    failed_transfers: int = 0
    #: Reads answered (from disk, or after waiting for a fetch).
    reads: int = 0
    #: Bytes of complete and partial bodies on disk, as far as this process knows.
    cached_bytes: int = 0


class ContentStore:
    """The on-disk content cache. Fetches run in the nursery given."""

    def __init__(
        self,
        api: ApiClient,
        cache_dir: Path,
        nursery: trio.Nursery,
        *,
        max_bytes: int | None = None,
        stall_timeout: float = 15.0,
        config: ContentConfig = ContentConfig(),  # noqa: B008 (frozen)
    ) -> None:
        directory = cache_dir / "content"
        self._disk = DiskStore(
            directory, nursery, config, max_bytes=max_bytes, known_size=self.known_size
        )
        self._sizes = SizeRegistry(
            api,
            directory / "sizes",
            nursery,
            stored=self._disk.complete_sizes,
            from_body=self._size_from_body,
            config=config.sizes,
        )
        self._fetcher = Fetcher(
            api,
            self._disk,
            nursery,
            config,
            remember_size=self._sizes.remember,
            stall_timeout=stall_timeout,
        )
        self._reads = 0
        self._config = config

    @property
    def max_bytes(self) -> int | None:
        """Bound on the bytes of cached bodies (least recently used go first); None: none."""
        return self._disk.eviction.max_bytes

    @property
    def stall_timeout(self) -> float:
        """Seconds a read waits for its bytes to make progress before it fails."""
        return self._fetcher.stall_timeout

    @property
    def ranges(self) -> bool | None:
        """Whether the server honours Range: None until a ranged request tells."""
        return self._fetcher.ranges

    async def stop_fetches(self) -> None:
        """Stop taking bytes from the network, and return once what arrived is on disk.
        Readers are served bytes as they arrive, before the disk has them: without this, an
        unmount right after a read would lose what its fetch had not written yet."""
        await self._fetcher.stop(self._disk.bodies.values())
        await self._disk.flush()

    async def aclose(self) -> None:
        """Record what is on disk of every partial body and close it, and the sizes not yet
        stored, so that a remount resumes where this mount stopped. Call it after the fetches
        stopped (the nursery given to the store is done)."""
        with trio.CancelScope(shield=True):
            await self._disk.aclose()
            await self._sizes.save()

    def stats(self) -> ContentStats:
        """A snapshot of the counters."""
        fetcher = self._fetcher
        return ContentStats(
            transfers=fetcher.transfers,
            bytes_received=fetcher.bytes_received,
            failed_transfers=fetcher.failed_transfers,
            reads=self._reads,
            cached_bytes=self._disk.eviction.cached_bytes() or 0,
        )

    # -- files held open, and sizes --------------------------------------------------------

    def hold(self, download_id: int) -> None:
        """A file of this body is open: keep the body in the cache until ``release``."""
        self._disk.eviction.hold(download_id)

    def release(self, download_id: int) -> None:
        self._disk.eviction.release(download_id)

    def known_size(self, download_id: int) -> int | None:
        """The size if this process already knows it; never does I/O."""
        return self._sizes.known(download_id)

    async def size(self, download_id: int) -> int:
        """The body's true size: from memory, the disk cache, a probe, or the body itself."""
        return await self._sizes.size(download_id)

    async def load_stored_sizes(self) -> None:
        """Learn the sizes the disk cache holds (once per store, in one thread hop), so that
        a listing after a remount carries every size without a probe."""
        await self._sizes.load_stored()

    def prefetch_sizes(self, download_ids: Iterable[int]) -> None:
        """Probe these sizes in the background, a bounded number at a time. A ``size`` call
        for one of them meanwhile waits for its probe rather than sending another."""
        self._sizes.prefetch(download_ids)

    async def wait_for_sizes(self, download_ids: Iterable[int]) -> None:
        """Return once none of these sizes is queued for a probe any more: each is known
        then, or its probe failed (and a ``size`` call would try again)."""
        await self._sizes.wait_for(download_ids)

    async def _size_from_body(self, download_id: int) -> int:
        """The size of a body whose server tells it only with the body: fetch the body."""
        async with self._disk.using(download_id) as body:
            if body is None:  # Completed meanwhile.
                return await trio.to_thread.run_sync(os.path.getsize, self._disk.path(download_id))
            body.want(EVERYTHING)
            while body.size is None:
                fetch = self._fetcher.fetch_for(body, 0, 1)
                await self._fetcher.wait_for_progress(body, fetch)
            return body.size

    # -- reads -------------------------------------------------------------------------------

    async def read(self, download_id: int, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes at ``offset``; fewer only at the end of the body."""
        return bytes(await self.read_buffer(download_id, offset, length))

    async def read_buffer(self, download_id: int, offset: int, length: int) -> bytes | memoryview:
        """``read``, but perhaps a view of bytes in memory: for a FUSE reply, which copies
        them anyway, one copy less."""
        self._reads += 1
        self._disk.eviction.touch(download_id)
        if (recent := self._arrived_now(download_id, offset, length)) is not None:
            return recent
        try:
            if download_id not in self._disk.complete:
                if (data := self._disk.unwritten.get(download_id)) is not None:
                    return memoryview(data)[offset : offset + length]
                size = await self.size(download_id)
                end = min(offset + length, size)
                if offset >= end:
                    return b""
                if (small := await self._small(download_id, size)) is not None:
                    return memoryview(small)[offset:end]
                async with self._disk.using(download_id) as body:
                    if body is not None:
                        await self._wait_for(body, offset, end)
                        recent = body.recent.get(offset, end)
                        if recent is not None:
                            return recent
                        # Held by this read, the descriptor stays open until it is done.
                        return await trio.to_thread.run_sync(os.pread, body.fd, length, offset)
            return await self._disk.read_complete(download_id, offset, length)
        except OSError as exc:
            raise ContentError(f"cannot read cached download {download_id}: {exc}") from exc

    async def _small(self, download_id: int, size: int) -> bytes | None:
        """The whole body if it is small, of a known size and not on disk at all (so
        nothing on disk needs a look), fetched whole; else None."""
        if size > self._config.small_max:
            return None
        await self._disk.ready()
        if self._disk.stored(download_id):
            return None
        return await self._fetcher.fetch_small(download_id, size)

    def _arrived_now(self, download_id: int, offset: int, length: int) -> memoryview | bytes | None:
        """The bytes of a read that the recent bytes hold, at once (no wait, no checkpoint:
        the body cannot be put to rest meanwhile); None when the read must take the long way.
        A reader right behind a fetch is the hot path of a cold sequential read."""
        body = self._disk.bodies.get(download_id)
        if body is None or body.resting or body.size is None:
            return None
        end = min(offset + length, body.size)
        if offset >= end:
            return None
        recent = body.recent.get(offset, end)
        if recent is not None:
            body.want(end)
        return recent

    async def _wait_for(self, body: Body, offset: int, end: int) -> None:
        """Return once ``[offset, end)`` is on disk or in the recent bytes; raise when it
        cannot be had."""
        body.want(end)
        while (gap := body.extents.first_gap(offset, end)) is not None:
            if body.recent.holds(offset, end):
                return  # arrived, on its way to the disk
            if not self._fetcher.serves(body, gap[0]):
                await self._learn_layout(body)
            fetch = self._fetcher.fetch_for(body, gap[0], end)
            await self._fetcher.wait_for_progress(body, fetch)

    async def _learn_layout(self, body: Body) -> None:
        """Once the end of a ZIP and its directory have arrived, note where members begin."""
        size = body.size
        if body.planner.boundaries is not None or size is None:
            return
        tail_start = max(size - TAIL_SEARCH, 0)
        try:
            tail = await _arrived(body, tail_start, size)
            if tail is None:
                return
            located = central_directory(tail, tail_start)
            if located is None:
                body.planner.boundaries = []
                return
            offset, length = located
            directory = await _arrived(body, offset, offset + length)
            if offset + length > size or directory is None:
                return  # The directory is not here yet: perhaps after the next fetch.
        except OSError:
            return
        body.planner.boundaries = member_boundaries(directory, offset) or []

    # -- whole bodies (mkwfs prefetch) ----------------------------------------------------

    async def complete_bodies(self) -> frozenset[int]:
        """The ids of the bodies complete in the cache (on disk, or written soon)."""
        await self._disk.ready()
        return frozenset(self._disk.complete)

    async def fetch_whole(self, download_id: int) -> int:
        """Make the body complete in the cache (no-op when it is); return its size.

        A small body of known size comes whole (`_small`), as a read of it would. A body of
        unknown size is fetched with one open-ended GET that tells the size (no
        probe first); a partial body joins a running fetch or starts one, as a read of all
        of it would. Returns once every byte arrived (on disk, or on its way there in the
        recent bytes); ``MkwfsError`` when the bytes cannot be had, as reads raise it."""
        self._disk.eviction.touch(download_id)
        size = self.known_size(download_id)
        if size is not None and await self._small(download_id, size) is not None:
            return size  # whole, on the lean path; on disk once its batch is written
        try:
            async with self._disk.using(download_id) as body:
                if body is not None:
                    body.want(EVERYTHING)
                    size = body.size if body.size is not None else self.known_size(download_id)
                    while size is None:
                        fetch = self._fetcher.fetch_for(body, 0, 1)
                        await self._fetcher.wait_for_progress(body, fetch)
                        size = body.size
                    await self._wait_for(body, 0, size)
                    return size
            known = self.known_size(download_id)
            if known is not None:
                return known
            return await trio.to_thread.run_sync(os.path.getsize, self._disk.path(download_id))
        except OSError as exc:
            raise ContentError(f"cannot read cached download {download_id}: {exc}") from exc


async def _arrived(body: Body, start: int, end: int) -> bytes | None:
    """``[start, end)`` from memory or disk; None unless all of it has arrived."""
    if (recent := body.recent.get(start, end)) is not None:
        return bytes(recent)
    if not body.extents.covers(start, end):
        return None
    return await trio.to_thread.run_sync(os.pread, body.fd, end - start, start)


@asynccontextmanager
async def open_content_store(
    api: ApiClient, cache_dir: Path, **options: Any
) -> AsyncIterator[ContentStore]:
    """A ``ContentStore`` with a nursery of its own for its fetches. On exit the fetches
    stop, and what partial bodies hold is recorded for the next store (``aclose``)."""
    store: ContentStore | None = None
    config: ContentConfig = options.get("config", ContentConfig())
    try:
        async with trio.open_nursery() as nursery:
            store = ContentStore(api, cache_dir, nursery, **options)
            yield store
            with trio.move_on_after(config.stop_timeout):
                await store.stop_fetches()
            nursery.cancel_scope.cancel()
    finally:
        if store is not None:
            await store.aclose()

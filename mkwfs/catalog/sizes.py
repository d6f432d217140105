"""Sizes of download bodies: known, probed in batches, and kept in a size log.

A size is a fact from the API (a HEAD, any GET's headers: ``Content-Length`` or the total of
``Content-Range``, or the body itself) and a download id's bytes never change, so a size
once learnt is kept for good: in memory, and in the size log (a line ``<id> <size>`` each,
appended as sizes are learnt) for the next mount. A file that was read is therefore never
probed, in this mount or the next. Sizes stay in this log rather than in the catalog's
database: they are facts about bodies, never revalidated, written as reads learn them (an
append, no transaction), and the content store's complete bodies tell theirs anyway.

``prefetch_sizes`` queues probes for a directory about to be listed; they run in batches
that take what is queued while they run, at most ``SizeConfig.concurrent_probes`` requests
at once. ``size`` of a queued id waits for its probe rather than sending another. When the
server tells a size only with the body, the registry asks its ``from_body`` (the content
store, which fetches the body once).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Iterable
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path

import trio

from mkwfs.catalog.cache import SingleFlight
from mkwfs.remote.api import ApiClient
from mkwfs.remote.errors import MkwfsError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SizeConfig:
    """Tuning of size probes and of the size log."""

    #: Size probes sent at once by ``prefetch_sizes``.
    concurrent_probes: int = 16
    #: Seconds the sizes found meanwhile gather before they are appended to the size log.
    gathering: float = 0.25
    #: False: no HEAD (nor its ranged GET stand-in) at all, for servers that count one as a
    #: download (``--size-probes off``): a size comes from the GET of the body, which the
    #: read that needs it sends anyway; ``prefetch`` does nothing.
    probes: bool = True


#: Sizes already on disk besides the log (complete bodies): a blocking call, run in the
#: thread that reads the log.
StoredSizes = Callable[[], dict[int, int]]
#: The size of a body that only the body itself tells (fetching it, once).
SizeFromBody = Callable[[int], Awaitable[int]]


class SizeRegistry:
    """Every size this mount knows, and the probes that learn the others. Background work
    (batches, appends to the log) runs in the nursery given."""

    def __init__(
        self,
        api: ApiClient,
        size_log: Path,
        nursery: trio.Nursery,
        *,
        stored: StoredSizes,
        from_body: SizeFromBody,
        config: SizeConfig = SizeConfig(),
    ) -> None:
        self._api = api
        self._size_log = size_log
        self._nursery = nursery
        self._stored = stored
        self._from_body = from_body
        self._config = config
        self._sizes: dict[int, int] = {}
        self._loaded = False
        self._load_flight = SingleFlight[None, None]()
        self._unsaved: list[tuple[int, int]] = []
        self._flights = SingleFlight[int, int]()
        self._probe_limiter = trio.CapacityLimiter(config.concurrent_probes)
        #: Ids a batch of ``prefetch_sizes`` is probing, each set when its answer came.
        self._queued: dict[int, trio.Event] = {}
        #: Ids queued for the next batch, and whether a task runs the batches.
        self._next_batch: list[int] = []
        self._batching = False

    def known(self, download_id: int) -> int | None:
        """The size if this process already knows it; never does I/O."""
        return self._sizes.get(download_id)

    async def size(self, download_id: int) -> int:
        """The body's true size: from memory, the size log, a probe, or the body itself."""
        known = self._sizes.get(download_id)
        if known is None and (queued := self._queued.get(download_id)) is not None:
            await queued.wait()  # a batch probes it: its answer, or a probe of its own
            known = self._sizes.get(download_id)
        if known is not None:
            return known
        return await self._flights.run(download_id, lambda: self._find(download_id))

    def remember(self, download_id: int, size: int) -> None:
        """Keep a size, in memory now and in the size log soon: sizes found together (a
        directory's probes) are appended together, in one thread hop."""
        if self._sizes.get(download_id) == size:
            return
        self._sizes[download_id] = size
        self._unsaved.append((download_id, size))
        if len(self._unsaved) == 1:
            self._nursery.start_soon(self._save_soon)

    async def load_stored(self) -> None:
        """Learn the sizes the disk holds (once per registry, in one thread hop), so that a
        listing after a remount carries every size without a probe."""
        if not self._loaded:
            await self._load_flight.run(None, self._load)

    async def save(self) -> None:
        """Append the sizes not yet in the log (shielded: an unmount must not lose them)."""
        while self._unsaved:
            lines = "".join(f"{i} {size}\n" for i, size in self._unsaved).encode()
            self._unsaved.clear()
            try:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(_append, self._size_log, lines)
            except OSError as exc:
                log.warning("cannot store sizes in %s: %s", self._size_log, exc)

    def prefetch(self, download_ids: Iterable[int]) -> None:
        """Probe these sizes in the background, a bounded number at a time. A ``size`` call
        for one of them meanwhile waits for its probe rather than sending another."""
        if not self._config.probes:
            return
        wanted = [i for i in download_ids if i not in self._sizes and i not in self._queued]
        for download_id in wanted:
            self._queued[download_id] = trio.Event()
        self._next_batch += wanted
        if wanted and not self._batching:
            self._batching = True
            self._nursery.start_soon(self._run_batches)

    async def wait_for(self, download_ids: Iterable[int]) -> None:
        """Return once none of these sizes is queued for a probe any more: each is known
        then, or its probe failed (and a ``size`` call would try again)."""
        for download_id in download_ids:
            if (queued := self._queued.get(download_id)) is not None:
                await queued.wait()

    async def _load(self) -> None:
        if not self._loaded:
            try:
                stored = await trio.to_thread.run_sync(_read_log, self._size_log, self._stored)
            except OSError as exc:
                log.warning("cannot read the stored sizes in %s: %s", self._size_log, exc)
                stored = {}
            for download_id, size in stored.items():
                self._sizes.setdefault(download_id, size)
            self._loaded = True

    async def _save_soon(self) -> None:
        # A thread hop per probe would cost more than the probe; the owner's aclose saves
        # what an unmount leaves, a crash loses sizes that are probed again.
        try:
            await trio.sleep(self._config.gathering)
            await self.save()
        except Exception:  # a background task must not take the mount down
            log.exception("storing sizes failed")

    async def _run_batches(self) -> None:
        """The queued probes, in batches that take what is queued while they run: the
        server gets at most ``concurrent_probes`` at once, and a scan's probes never wait
        for a batch to end."""
        try:
            await self.load_stored()
            while batch := self._next_batch:
                try:
                    # The list grows while the batch path runs, and the batch takes it all.
                    unknown = await self._probe_batch(batch)
                finally:
                    self._next_batch = []  # what is queued from now on makes the next batch
                try:
                    await self._probe_each(unknown)
                finally:
                    for download_id in batch:
                        self._unqueue(download_id)
        except Exception:  # a background task must not take the mount down
            log.exception("size probes failed")
        finally:
            self._batching = False
            for download_id in self._next_batch:
                self._unqueue(download_id)
            self._next_batch = []

    async def _probe_batch(self, download_ids: list[int]) -> list[int]:
        """The sizes of a batch on the API's batch path, each unqueued as it comes; the ids
        that path could not tell. ``download_ids`` may grow meanwhile: the batch takes the
        ids added too."""
        unknown: list[int] = []
        try:
            batch = self._api.probe_downloads(download_ids, at_once=self._config.concurrent_probes)
            async with aclosing(batch) as answers:
                async for download_id, info in answers:
                    if info is not None and info.size is not None:
                        self.remember(download_id, info.size)
                        self._unqueue(download_id)
                    else:
                        unknown.append(download_id)
        except MkwfsError as exc:
            log.debug("size probes failed: %s", exc)
            unknown = [i for i in download_ids if i in self._queued]
        return unknown

    async def _probe_each(self, download_ids: list[int]) -> None:
        """One full probe each, ``concurrent_probes`` at a time (logins, retries, servers
        without HEAD), each unqueued at its answer."""

        async def probe(download_id: int) -> None:
            try:
                async with self._probe_limiter:
                    await self._flights.run(download_id, lambda: self._find(download_id))
            except MkwfsError as exc:
                log.debug("size probe of download %d failed: %s", download_id, exc)
            finally:
                self._unqueue(download_id)

        async with trio.open_nursery() as nursery:
            for download_id in download_ids:
                nursery.start_soon(probe, download_id)

    def _unqueue(self, download_id: int) -> None:
        queued = self._queued.pop(download_id, None)
        if queued is not None:
            queued.set()

    async def _find(self, download_id: int) -> int:
        await self.load_stored()
        stored = self._sizes.get(download_id)
        if stored is not None:
            return stored
        if not self._config.probes:
            return await self._from_body(download_id)
        info = await self._api.probe_download(download_id)
        if info.size is not None:
            self.remember(download_id, info.size)
            return info.size
        # The server tells the size only with the body: take the body, once.
        return await self._from_body(download_id)


def _read_log(size_log: Path, stored: StoredSizes) -> dict[int, int]:
    """Sizes from the size log (a torn last line is skipped), then those ``stored`` finds."""
    sizes: dict[int, int] = {}
    try:
        text = size_log.read_bytes().decode("ascii", "replace")
    except FileNotFoundError:
        text = ""
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[0].isdigit() and fields[1].isdigit():
            sizes[int(fields[0])] = int(fields[1])
    sizes.update(stored())
    return sizes


def _append(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)

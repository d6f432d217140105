"""The bodies on disk, under ``<cache dir>/content``.

``<id>``       a complete body: renamed into place only once every byte is written, so a
               killed daemon never leaves a short file under this name; a crash of the
               machine is covered by ``durable.py``'s rule (boot id, batch syncs, journal);
``<id>.new``   a small body being written (`store_whole`), renamed to ``<id>`` in the same
               call; one left by a killed daemon is deleted at start;
``<id>.part``  a body in progress (sparse);
``<id>.map``   which ranges of ``<id>.part`` are on disk, written after syncing them, so
               after a crash only bytes that were really written are trusted;
``boot``, ``durable``  see ``durable.py``.

At start (`ready`) the directory is read once: which bodies are complete, which partial
(so a body never stored costs no look at the disk), and what a reboot left untrusted.

A small body fetched whole (`store_whole`) is served from memory until a background task
has written it, several at a time, each in one call (write, rename), in one thread hop.
A body in progress is open (a ``Body``) while something reads or fetches it; once nobody
has used it for ``idle_rest`` seconds it is put to rest: a complete one is synced and
renamed, a partial one has its map recorded and is closed. The ``Evictor`` then keeps the
bodies within the cache's bound.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from mkwfs.catalog.cache import SingleFlight
from mkwfs.content.body import Body
from mkwfs.content.config import ContentConfig
from mkwfs.content.durable import Durability, Identity, identity
from mkwfs.content.eviction import Evictor
from mkwfs.content.extents import Extents
from mkwfs.content.tasks import guarded
from mkwfs.content.writer import DiskWriter, write_all
from mkwfs.remote.errors import ContentError

log = logging.getLogger(__name__)


class DiskStore:
    """The ``content`` directory: complete bodies, and the bodies in progress, open while
    used. Background work (maps, renames) runs in the nursery given."""

    def __init__(
        self,
        directory: Path,
        nursery: trio.Nursery,
        config: ContentConfig,
        *,
        max_bytes: int | None,
        known_size: Callable[[int], int | None],
    ) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        directory.chmod(0o700)  # mkwfs's own directory: private even if it existed before
        self._nursery = nursery
        self._config = config
        self._known_size = known_size
        self._prefix = f"{os.fspath(directory)}/"
        #: Bodies in progress, open while something uses them.
        self.bodies: dict[int, Body] = {}
        #: Bodies known to be complete on disk.
        self.complete: set[int] = set()
        #: Bodies that may have a ``.part`` on disk (after ``ready``: all that do).
        self.partial: set[int] = set()
        #: Small bodies fetched whole, served from here until they are written.
        self.unwritten: dict[int, bytes] = {}
        self._writing = False
        self._written = trio.Event()
        self._unwritten_bytes = 0
        self._batch_full = trio.Event()
        #: Bodies written but not synced yet, and whether a sync of them is planned.
        self._unsynced: list[tuple[int, Identity]] = []
        self._sync_planned = False
        self.durability = Durability(os.fspath(directory), config.boot_id_file)
        self._ready = False
        self._flights = SingleFlight[int, None]()
        self._ready_flight = SingleFlight[None, None]()
        self.eviction = Evictor(
            directory, max_bytes, grace=config.eviction_grace, forget=self._forget
        )

    def path(self, download_id: int, suffix: str = "") -> str:
        # A plain string: pathlib costs more than the read it names, on the hot path.
        return f"{self._prefix}{download_id}{suffix}"

    def _forget(self, download_id: int) -> None:
        """The evictor deleted the body."""
        self.complete.discard(download_id)
        self.partial.discard(download_id)

    async def ready(self) -> None:
        """Read the directory once (see the module docstring); before any write."""
        if not self._ready:
            await self._ready_flight.run(None, self._recover)

    async def _recover(self) -> None:
        if self._ready:
            return
        try:
            found = await trio.to_thread.run_sync(self.durability.recover)
        except OSError as exc:
            raise ContentError(f"cannot open the cache {self.directory}: {exc}") from exc
        if found.dropped:
            log.info("dropped %d cached bodies a crash may have cut short", len(found.dropped))
        self.complete.update(found.complete)
        self.partial.update(found.partial)
        self._ready = True

    def stored(self, download_id: int) -> bool:
        """Whether the disk has (or may have) anything of the body; after ``ready``, exact."""
        return (
            not self._ready
            or download_id in self.complete
            or download_id in self.partial
            or download_id in self.bodies
        )

    def complete_sizes(self) -> dict[int, int]:
        """The sizes of the complete bodies on disk (blocking: for a worker thread)."""
        self.durability.recover()
        sizes: dict[int, int] = {}
        for entry in os.scandir(self.directory):
            if entry.name.isdigit():
                with contextlib.suppress(FileNotFoundError):
                    sizes[int(entry.name)] = entry.stat().st_size
        return sizes

    @asynccontextmanager
    async def using(self, download_id: int) -> AsyncIterator[Body | None]:
        """The body in progress, loaded from disk if need be, held (``users``) so that it is
        not put to rest meanwhile; None once it is complete."""
        while True:
            body = self.bodies.get(download_id)
            if body is None:
                if download_id in self.complete:
                    break
                await self._flights.run(download_id, lambda: self._load_body(download_id))
            elif body.resting:
                await body.rested.wait()
            else:
                body.users += 1  # no checkpoint between the look and the hold
                break
        if body is None:
            yield None
            return
        try:
            yield body
        finally:
            body.users -= 1
            await self.settle(body)

    async def _load_body(self, download_id: int) -> None:
        await self.ready()
        if download_id in self.complete or download_id in self.bodies:
            return
        self.partial.add(download_id)
        try:
            state = await trio.to_thread.run_sync(
                _load_part,
                self.path(download_id),
                self.path(download_id, ".part"),
                self.path(download_id, ".map"),
            )
        except OSError as exc:
            raise ContentError(f"cannot open the cache of download {download_id}: {exc}") from exc
        if state is None:
            self.complete.add(download_id)
            return
        fd, extents = state
        size = self._known_size(download_id)
        self.bodies[download_id] = Body(download_id, fd, extents, size, self._config)

    def store_whole(self, download_id: int, data: bytes) -> None:
        """Keep a whole body fetched in one piece: served from ``unwritten`` until a
        background task wrote it (see the module docstring). Call it after ``ready``."""
        self.unwritten[download_id] = data
        self._unwritten_bytes += len(data)
        if self._unwritten_bytes >= self._config.write_batch:
            self._batch_full.set()
        if not self._writing:
            self._writing = True
            self._nursery.start_soon(guarded, self._write_wholes)

    async def flush(self) -> None:
        """Return once the small bodies given so far are written (or failed to be), at
        once: without waiting for more to gather."""
        while self._writing:
            self._batch_full.set()
            await self._written.wait()

    async def _write_wholes(self) -> None:
        """Write what ``store_whole`` was given, all that waits in one thread hop."""
        try:
            with trio.move_on_after(self._config.write_gather):
                await self._batch_full.wait()  # cancelled: no more gathering, write now
        finally:
            with trio.CancelScope(shield=True):  # what is fetched gets written
                await self._write_unwritten()

    async def _write_unwritten(self) -> None:
        try:
            while batch := [(i, d) for i, d in self.unwritten.items() if i not in self.complete]:
                jobs = [(self.path(i, ".new"), self.path(i), d) for i, d in batch]
                results = await trio.to_thread.run_sync(_write_wholes, jobs)
                for (download_id, data), result in zip(batch, results, strict=True):
                    if isinstance(result, OSError):
                        log.warning("cannot store download %d: %s", download_id, result)
                    else:
                        self.complete.add(download_id)
                        self._unsynced.append((download_id, result))
                        self.eviction.touch(download_id, len(data))
                    del self.unwritten[download_id]
                    self._unwritten_bytes -= len(data)
                self._sync_soon()
                await self.eviction.evict(self.bodies)
            self.unwritten.clear()  # the rest was complete on disk already
            self._unwritten_bytes = 0
        finally:
            self._batch_full = trio.Event()
            self._writing = False
            self._written.set()
            self._written = trio.Event()

    def _sync_soon(self) -> None:
        """Sync what was written without a sync, ``sync_delay`` seconds from now, with
        what is written meanwhile."""
        if self._unsynced and not self._sync_planned:
            self._sync_planned = True
            self._nursery.start_soon(guarded, self._sync_later)

    async def _sync_later(self) -> None:
        try:
            await trio.sleep(self._config.sync_delay)
        finally:
            with trio.CancelScope(shield=True):
                await self.sync()

    async def sync(self) -> None:
        """Make the bodies written so far durable, and note them (see durable.py)."""
        self._sync_planned = False
        batch, self._unsynced = self._unsynced, []
        try:
            await trio.to_thread.run_sync(self.durability.note_synced, batch)
        except OSError as exc:
            log.warning("cannot sync the cache: %s", exc)

    async def read_complete(self, download_id: int, offset: int, length: int) -> bytes:
        """Bytes of a body that is complete (or was complete when the caller looked)."""
        return await trio.to_thread.run_sync(
            _pread_either,
            self.path(download_id),
            self.path(download_id, ".part"),
            offset,
            length,
        )

    async def open_writer(self, body: Body, *, direct: bool) -> DiskWriter:
        """A writer into the body's ``.part`` file; ``direct``: around the page cache, if
        the file system allows it."""
        if not direct:
            return DiskWriter(None, body.fd)
        path = self.path(body.download_id, ".part")
        return await trio.to_thread.run_sync(DiskWriter, path, body.fd)

    def wrote(self, body: Body) -> None:
        """The body's extents grew: record its map once ``map_interval`` more bytes are on
        disk."""
        if body.extents.total - body.mapped >= self._config.map_interval:
            self._map_soon(body)

    def _map_soon(self, body: Body) -> None:
        """Record the map in the background: the fsync it waits for is nobody's wait. The
        body counts it as a user, so that its descriptor stays open until it is done."""
        if body.mapping:
            return
        body.mapping = True
        body.users += 1
        self._nursery.start_soon(guarded, self._map_in_background, body)

    async def _map_in_background(self, body: Body) -> None:
        try:
            await self._record_map(body)
        finally:
            body.mapping = False
            body.users -= 1
            await self.settle(body)

    async def _record_map(self, body: Body) -> None:
        """Sync the body, then record which ranges are on disk."""
        ranges = body.extents.ranges
        payload = json.dumps({"size": body.size, "ranges": ranges}).encode()
        await trio.to_thread.run_sync(
            _sync_and_write, body.fd, self.path(body.download_id, ".map"), payload
        )
        body.mapped = sum(e - s for s, e in ranges)

    async def settle(self, body: Body) -> None:
        """After a fetch or a read: finish a complete body (in the background: its fsync is
        nobody's wait); put a partial one to rest once nobody used it for ``idle_rest``
        seconds (reopening it costs disk work)."""
        if body.fetches or body.users or body.resting:
            return
        if body.complete:
            if not body.finishing:
                body.finishing = True
                self._nursery.start_soon(guarded, self._finish_soon, body)
        elif not body.rest_planned:
            body.rest_planned = True
            self._nursery.start_soon(guarded, self._rest_when_idle, body)

    async def _finish_soon(self, body: Body) -> None:
        body.finishing = False
        # Taken again meanwhile? Then its last user settles it again.
        if not (body.fetches or body.users or body.resting):
            with trio.CancelScope(shield=True):
                await self._put_to_rest(body)

    async def _rest_when_idle(self, body: Body) -> None:
        idle_since = trio.current_time()
        while not body.resting:
            await trio.sleep_until(idle_since + self._config.idle_rest)
            if body.fetches or body.users:
                idle_since = trio.current_time()
            elif not body.resting:
                with trio.CancelScope(shield=True):
                    await self._put_to_rest(body)

    async def aclose(self) -> None:
        """Record what is on disk of every partial body and close it, and sync what was
        written without a sync (shielded)."""
        with trio.CancelScope(shield=True):
            await self.flush()
            for body in list(self.bodies.values()):
                if not body.resting:
                    await self._put_to_rest(body)
            await self.sync()

    async def _put_to_rest(self, body: Body) -> None:
        """Finish or close a body. Meanwhile ``using`` waits for it, so nobody uses a
        descriptor being closed or loads a map being written."""
        download_id = body.download_id
        body.resting = True
        try:
            if body.complete:
                # From now on reads go to the file, whichever of its two names it has.
                self.complete.add(download_id)
                synced = await trio.to_thread.run_sync(
                    _finish,
                    body.fd,
                    self.path(download_id, ".part"),
                    self.path(download_id),
                    self.path(download_id, ".map"),
                )
                self.partial.discard(download_id)
                self._unsynced.append((download_id, synced))  # for the journal
                self._sync_soon()
            else:
                if body.extents.total != body.mapped:
                    await self._record_map(body)
                os.close(body.fd)
        except OSError as exc:
            log.warning("cannot store download %d: %s", download_id, exc)
            with contextlib.suppress(OSError):
                os.close(body.fd)
        finally:
            del self.bodies[download_id]
            body.rested.set()
        self.eviction.touch(download_id, body.extents.total)
        await self.eviction.evict(self.bodies)


def _load_part(final: str, part: str, ranges: str) -> tuple[int, Extents] | None:
    """Open a partial body, trusting only the ranges its map records; None if complete."""
    if os.path.exists(final):
        return None
    fd = os.open(part, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    extents = Extents()
    try:
        with open(ranges, "rb") as recorded_file:
            recorded = json.load(recorded_file)
        length = os.fstat(fd).st_size
        for start, end in recorded["ranges"]:
            if isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= length:
                extents.add(start, end)
    except (OSError, ValueError, KeyError, TypeError):
        pass  # No usable map: nothing on disk is trusted.
    return fd, extents


def _sync_and_write(fd: int, path: str, payload: bytes) -> None:
    os.fdatasync(fd)
    _write_atomically(path, payload)


def _finish(fd: int, part: str, final: str, ranges: str) -> Identity:
    """Make a complete body durable, then give it its final name; its identity."""
    try:
        os.fdatasync(fd)
        synced = identity(os.fstat(fd))
    finally:
        os.close(fd)
    os.replace(part, final)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(ranges)
    return synced


def _write_wholes(jobs: list[tuple[str, str, bytes]]) -> list[Identity | OSError]:
    """Write each body to its ``.new`` name and rename it to its final one, once all its
    bytes are written (not synced: see durable.py); each one's identity, or its error."""
    results: list[Identity | OSError] = []
    for new, final, data in jobs:
        try:
            fd = os.open(new, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                write_all(fd, data, 0)
                written = identity(os.fstat(fd))
            finally:
                os.close(fd)
            os.replace(new, final)
            results.append(written)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(new)
            results.append(exc)
    return results


def _write_atomically(path: str, data: bytes) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as file:
        file.write(data)
    os.replace(tmp, path)


def _pread_either(final: str, part: str, offset: int, length: int) -> bytes:
    """Read from the complete body, or from the partial one if it is not yet renamed.

    The rename is atomic, so one of the two names exists unless the cache was wiped.
    """
    for path in (final, part, final):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            return os.pread(fd, length, offset)
        finally:
            os.close(fd)
    raise FileNotFoundError(f"{final} is gone")
